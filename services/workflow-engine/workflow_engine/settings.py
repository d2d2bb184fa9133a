from pydantic import Field

from servicekit.settings import ServiceSettings


class WorkflowEngineSettings(ServiceSettings):
    service_name: str = "workflow-engine"
    http_port: int = 8002
    timer_poll_s: float = Field(default=0.25, gt=0, description="How often due timers are looked for.")
    webhook_concurrency: int = Field(default=32, ge=1)
    timer_carry_after_s: float = Field(
        default=30.0,
        gt=0,
        description="A timer due at least this long after its decision rides in the commit that starts it (no write "
        "of its own); a sooner one is a document. Commits must be written, and the replicas' clocks agree, well "
        "within it.",
    )
