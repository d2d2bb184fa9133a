from typing import Literal

from pydantic import Field

from servicekit.settings import ServiceSettings


class OrchestratorSettings(ServiceSettings):
    service_name: str = "orchestrator"
    http_port: int = 8001
    agent_offline_after_s: float = Field(
        default=15.0, gt=0, description="An agent is offline when no runtime worker has sent a heartbeat this long."
    )
    delegation_max_depth: int = Field(
        default=3, ge=1, le=20, description="The most agents a delegation chain holds (the delegators and the target)."
    )


class RuntimeSettings(OrchestratorSettings):
    """The agent runtime: a process of the orchestrator's package with its own replicas, sharing its database."""

    service_name: str = "agent-runtime"
    http_port: int = 8005
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_model: str = Field(default="gpt-4o-mini", description="The model of agents whose setting names none.")
    openai_max_retries: int = Field(default=2, ge=0, le=10, description="The openai SDK's retries of 429 and 5xx.")
    openai_max_tokens_param: Literal["auto", "max_completion_tokens", "max_tokens"] = "auto"
    openai_response_format: Literal["json_schema", "json_object"] = Field(
        default="json_schema",
        description="How an output schema is sent: OpenAI's json_schema, or json_object with the schema beside it "
        "(llama-cpp-python's server).",
    )
    model_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="USD per million prompt and completion tokens, by model name; a model not listed costs 0.",
    )
    task_workers: int = Field(default=64, ge=1, le=1024, description="Tasks a runtime replica works on at once.")
    task_max_deliver: int = Field(
        default=20_000, ge=10, description="Deliveries of a task (waiting for a free agent counts) before dead-letter."
    )
    heartbeat_s: float = Field(default=5.0, gt=0, description="How often a worker says it is alive.")
    slot_lease_s: float = Field(
        default=30.0, gt=0, description="How long a task's hold on an agent slot lasts unrenewed."
    )
    no_agent_grace_s: float = Field(
        default=3.0, ge=0, description="How long a task with no agent that could take it waits for one to appear."
    )
    memory_timeout_s: float = Field(default=2.0, gt=0, description="Timeout of the memory retrieval for a prompt.")
    max_call_s: float = Field(default=600.0, gt=0, description="Upper bound of one model call, whatever the deadline.")

    @property
    def database_name(self) -> str:
        return self.subjects.database("orchestrator")
