"""Settings every service reads from its environment."""

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import Subjects


class ServiceSettings(BaseSettings):
    """Base settings; each service subclasses it and sets ``service_name`` and its default port."""

    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "service"
    platform_env: str = Field(
        default="dev",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,40}$",
        description="Prefix of every stream, subject, consumer and database name.",
    )
    nats_url: str = "nats://127.0.0.1:4222"
    mongodb_url: str = "mongodb://127.0.0.1:27017"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    mongo_timeout_ms: int = Field(default=5000, ge=100)
    nats_timeout_s: float = Field(default=5.0, gt=0)
    command_max_deliver: int = Field(default=5, ge=1)
    command_ack_wait_s: float = Field(default=30.0, gt=0)
    consumer_workers: int = Field(
        default=128,
        ge=1,
        le=512,
        description="Messages a command or reaction consumer handles at once per replica (handlers mostly wait for "
        "the database and the broker, so throughput needs many at once).",
    )
    query_workers: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="Queries a replica answers at once (they mostly wait for the database).",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="On shutdown, how long messages being handled may take to finish before they are given back.",
    )
    relay_poll_interval_s: float = Field(
        default=1.0, gt=0, description="How often the relay saves its checkpoint and looks for dead writers' work."
    )
    http_max_header_bytes: int = Field(
        default=32_768, ge=1024, description="Largest request head (request line and header fields; 431 beyond)."
    )
    http_max_headers: int = Field(default=100, ge=8, description="Most header fields in a request (431 beyond).")
    http_header_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a request head may take to arrive (408 after)."
    )
    http_discard_bytes: int = Field(
        default=16 * 1_048_576,
        ge=0,
        description="How much of a request answered before it was read (an error: 413, 431, 408) is read and "
        "thrown away, so that a client that sends everything before it reads still sees the answer.",
    )
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str | None = None
    log_level: str = "INFO"
    access_log: bool = Field(default=False, description="Log every HTTP request (traces already record them).")

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.platform_env)

    @property
    def database_name(self) -> str:
        return self.subjects.database(self.service_name)
