from pydantic import Field

from servicekit.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    http_port: int = 8000
    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest accepted request body.")
    max_json_depth: int = Field(
        default=32, ge=2, le=64, description="Deepest nesting of a JSON body (MongoDB: 100 levels, wrapping included)."
    )
    command_wait_s: float = Field(default=5.0, ge=0, description="How long a command request waits for its outcome.")
    query_timeout_s: float = Field(default=5.0, gt=0)
    memory_max_entry_chars: int = Field(default=10_000, ge=1, description="Longest memory entry (characters).")
    memory_max_import_entries: int = Field(default=1000, ge=1, description="Most entries in one import.")
    memory_max_query_chars: int = Field(default=500, ge=1, description="Longest retrieval query (characters).")
    memory_default_ttl_s: float = Field(default=86_400.0, gt=0, description="Short-term expiry when none is given.")
