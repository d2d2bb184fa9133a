from pydantic import Field, SecretStr

from servicekit.settings import ServiceSettings


class NeptuneSettings(ServiceSettings):
    service_name: str = "neptune"
    http_port: int = 8004
    gateway_url: str = Field(
        default="http://127.0.0.1:8000", description="Where Neptune's tool calls go: the gateway's REST API."
    )
    gateway_timeout_s: float = Field(default=30.0, gt=0, description="How long one tool call may take.")
    openai_api_key: SecretStr | None = Field(
        default=None, description="With a key, a model (OpenAI-compatible, tool calling) reads the messages."
    )
    openai_base_url: str | None = None
    neptune_model: str = Field(default="gpt-4o-mini", description="The model Neptune talks with.")
    openai_max_retries: int = Field(default=2, ge=0, le=10, description="The SDK's retries of 429, 5xx, connections.")
    model_timeout_s: float = Field(default=60.0, gt=0, description="Deadline of one model call, its retries included.")
    max_tool_rounds: int = Field(default=6, ge=1, le=20, description="Rounds of tool calls in one turn.")
    max_output_tokens: int = Field(default=800, ge=16, le=16_000, description="Longest answer of one model call.")
    turn_max_tokens: int = Field(
        default=40_000, ge=1000, description="A turn's model budget: a call whose worst case does not fit is not made."
    )
    history_max_tokens: int = Field(default=6000, ge=0, description="How much of the conversation the model rereads.")
