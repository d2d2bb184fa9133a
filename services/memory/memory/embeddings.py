"""Embeddings from any OpenAI-compatible endpoint (used only when EMBEDDINGS_MODEL and a key are configured)."""

from collections.abc import Sequence

from openai import AsyncOpenAI


class OpenAIEmbeddings:
    def __init__(self, api_key: str, model: str, base_url: str | None = None, timeout_s: float = 10.0) -> None:
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=1)
        self._model = model

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        response = await self._client.embeddings.create(model=self._model, input=list(texts))
        return [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
