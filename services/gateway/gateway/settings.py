from pydantic import Field

from servicekit.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    http_port: int = 8000
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest accepted request body.")
    command_wait_s: float = Field(default=5.0, ge=0, description="How long a command request waits for its outcome.")
    query_timeout_s: float = Field(default=5.0, gt=0)
