"""The gateway and the orchestrator running in this process against the real NATS and MongoDB-compatible server."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conftest import Infra
from gateway.admin import create_workspace
from gateway.main import build_app
from gateway.settings import GatewaySettings
from orchestrator.main import build_app as build_orchestrator
from orchestrator.settings import OrchestratorSettings


@dataclass
class Platform:
    client: httpx.AsyncClient
    gateway: FastAPI
    settings: GatewaySettings

    async def new_workspace(self, name: str = "Acme") -> dict[str, str]:
        return await create_workspace(self.settings, name)

    @staticmethod
    def auth(workspace: dict[str, str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {workspace['api_key']}"}


@asynccontextmanager
async def running_platform(infra: Infra, env_name: str, **overrides: Any) -> AsyncIterator[Platform]:
    """The gateway (with ``overrides`` applied to its settings) and the orchestrator, started in-process."""
    common = {"platform_env": env_name, "nats_url": infra.nats_url, "mongodb_url": infra.mongodb_url}
    settings = GatewaySettings(**{"max_body_bytes": 4096, **common, **overrides})
    gateway = build_app(settings)
    orchestrator = build_orchestrator(OrchestratorSettings(**common, relay_poll_interval_s=0.2))  # type: ignore[arg-type]
    async with (
        orchestrator.router.lifespan_context(orchestrator),
        gateway.router.lifespan_context(gateway),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway") as client,
    ):
        yield Platform(client, gateway, settings)


@pytest.fixture
async def platform(infra: Infra, env_name: str) -> AsyncIterator[Platform]:
    async with running_platform(infra, env_name) as running:
        yield running
