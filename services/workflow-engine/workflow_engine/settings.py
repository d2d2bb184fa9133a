from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from servicekit.settings import ServiceSettings
from workflow_engine.domain.addresses import AddressPolicy


class WorkflowEngineSettings(ServiceSettings):
    service_name: str = "workflow-engine"
    http_port: int = 8002
    timer_poll_s: float = Field(default=0.25, gt=0, description="How often due timers are looked for.")
    webhook_concurrency: int = Field(default=32, ge=1)
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Internal destinations webhooks may call, comma-separated: host names (reached wherever they "
        "resolve), addresses and CIDR networks. Without them a webhook reaches public addresses only.",
    )
    timer_carry_after_s: float = Field(
        default=30.0,
        gt=0,
        description="A timer due at least this long after its decision is a carried timer, riding in the commit that "
        "starts it (no write of its own); a sooner one is a timer document. Commits must be written, and the "
        "replicas' clocks agree, well within it.",
    )

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        AddressPolicy.allowing(value)  # a malformed network fails at start-up, not at the first call
        return value

    @property
    def webhook_addresses(self) -> AddressPolicy:
        return AddressPolicy.allowing(self.webhook_allowed_hosts)
