from pydantic import Field, SecretStr

from servicekit.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    http_port: int = 8000
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest accepted request body.")
    body_read_timeout_s: float = Field(
        default=15.0, gt=0, description="How long a request body may take to arrive (408 after)."
    )
    max_json_depth: int = Field(
        default=32, ge=2, le=64, description="Deepest nesting of a JSON body (MongoDB: 100 levels, wrapping included)."
    )
    command_wait_s: float = Field(default=5.0, ge=0, description="How long a command request waits for its outcome.")
    query_timeout_s: float = Field(default=5.0, gt=0)
    backend_services: str = Field(
        default="orchestrator,workflow-engine,memory,neptune,agent-runtime",
        pattern=r"^[a-z0-9,-]*$",
        description="Comma-separated services whose answer to a ping /readyz asks for.",
    )
    backend_ping_timeout_s: float = Field(default=1.0, gt=0, description="How long /readyz waits for each ping.")
    memory_max_entry_chars: int = Field(default=10_000, ge=1, description="Longest memory entry (characters).")
    memory_max_import_entries: int = Field(default=1000, ge=1, description="Most entries in one import.")
    memory_max_query_chars: int = Field(default=500, ge=1, description="Longest retrieval query (characters).")
    memory_default_ttl_s: float = Field(default=86_400.0, gt=0, description="Short-term expiry when none is given.")

    neptune_token_secret: SecretStr = Field(
        default=SecretStr(""),
        description="Signs the short-lived credentials minted for Neptune's tool calls; the same on every gateway "
        "replica (empty: a random one per process, enough for one gateway).",
    )
    neptune_token_ttl_s: float = Field(default=300.0, gt=0, le=3600, description="How long such a credential lives.")
    neptune_turn_timeout_s: float = Field(
        default=120.0, gt=0, description="How long a chat turn's stream waits for Neptune's answer."
    )

    @property
    def backends(self) -> list[str]:
        return [name for name in self.backend_services.split(",") if name]
