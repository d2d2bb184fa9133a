"""Model providers behind one interface (``base.ModelProvider``): ``local`` (deterministic, offline, the default)
and ``openai`` (any OpenAI-compatible endpoint)."""

from orchestrator.providers.base import ModelError, ModelProvider
from orchestrator.providers.local import LocalProvider


class Providers:
    """The providers a runtime replica has, by name; ``openai`` only when an endpoint is configured."""

    def __init__(self, *, openai_api_key: str | None, openai_base_url: str | None, openai_max_retries: int) -> None:
        self._providers: dict[str, ModelProvider] = {"local": LocalProvider()}
        if openai_api_key or openai_base_url:
            from orchestrator.providers.openai_provider import OpenAIProvider

            self._providers["openai"] = OpenAIProvider(
                api_key=openai_api_key or "not-needed",
                base_url=openai_base_url,
                max_retries=openai_max_retries,
            )

    def get(self, name: str) -> ModelProvider:
        provider = self._providers.get(name)
        if provider is None:
            raise ModelError(f"no {name} endpoint is configured (set OPENAI_API_KEY and/or OPENAI_BASE_URL)")
        return provider

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
