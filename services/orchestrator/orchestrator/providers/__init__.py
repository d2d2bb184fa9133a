"""Model providers behind one interface (``base.ModelProvider``): ``local`` (deterministic, offline, the default)
and ``openai`` (any OpenAI-compatible endpoint)."""

from contracts.agents import LOCAL_MODEL, ModelSetting
from orchestrator.providers.base import ModelError, ModelProvider
from orchestrator.providers.local import LocalProvider
from orchestrator.providers.openai_provider import MaxTokensParam, OpenAIProvider, ResponseFormatStyle


class Providers:
    """The providers a runtime replica has, by name; ``openai`` only when an endpoint is configured."""

    def __init__(
        self,
        *,
        openai_api_key: str | None,
        openai_base_url: str | None,
        openai_model: str,
        openai_max_retries: int = 2,
        openai_max_tokens_param: MaxTokensParam = "auto",
        openai_response_format: ResponseFormatStyle = "json_schema",
    ) -> None:
        self._providers: dict[str, ModelProvider] = {"local": LocalProvider()}
        self._openai_model = openai_model
        if openai_api_key or openai_base_url:
            self._providers["openai"] = OpenAIProvider(
                api_key=openai_api_key,
                base_url=openai_base_url,
                max_retries=openai_max_retries,
                max_tokens_param=openai_max_tokens_param,
                response_format=openai_response_format,
            )

    def resolve(self, setting: ModelSetting) -> tuple[str, str]:
        """The provider and model an agent's setting names here: ``auto`` is openai when an endpoint is configured,
        else local; a model left out is the provider's default (OPENAI_MODEL for openai)."""
        provider = setting.provider
        if provider == "auto":
            provider = "openai" if "openai" in self._providers else "local"
        if provider == "local":
            return provider, LOCAL_MODEL
        return provider, setting.model or self._openai_model

    def get(self, name: str) -> ModelProvider:
        provider = self._providers.get(name)
        if provider is None:
            raise ModelError(f"no {name} endpoint is configured (set OPENAI_API_KEY and/or OPENAI_BASE_URL)")
        return provider

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.close()
