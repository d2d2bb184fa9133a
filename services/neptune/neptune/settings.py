from pydantic import Field

from servicekit.settings import ServiceSettings


class NeptuneSettings(ServiceSettings):
    service_name: str = "neptune"
    http_port: int = 8004
    gateway_url: str = Field(
        default="http://127.0.0.1:8000", description="Where Neptune's tool calls go: the gateway's REST API."
    )
    gateway_timeout_s: float = Field(default=30.0, gt=0, description="How long one tool call may take.")
