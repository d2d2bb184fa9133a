"""The platform with the real agent runtime whose ``openai`` provider points at the tests' OpenAI-compatible server
(agents with the ``local`` provider run beside them), and the memory service: what team runs and messages need."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from conftest import Infra, Platform, running_platform
from orchestrator.settings import RuntimeSettings
from tests.support.openai_server import OpenAICompatibleServer


@asynccontextmanager
async def with_runtime(
    infra: Infra, env_name: str, server: OpenAICompatibleServer, **gateway: Any
) -> AsyncIterator[Platform]:
    settings = RuntimeSettings(
        openai_base_url=server.base_url, openai_api_key="test", openai_max_retries=0, heartbeat_s=0.5
    )
    async with running_platform(infra, env_name, behaviour=None, memory=True, runtime=settings, **gateway) as running:
        yield running
