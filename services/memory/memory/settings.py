from pydantic import Field

from servicekit.settings import ServiceSettings


class MemorySettings(ServiceSettings):
    service_name: str = "memory"
    http_port: int = 8003
    clear_short_term_on_scope_end: bool = Field(
        default=True, description="Clear an execution's short-term memory when the execution ends."
    )
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    embeddings_model: str | None = Field(default=None, description="Set (with a key) to add semantic similarity.")
