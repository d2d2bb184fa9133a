"""Fixtures shared by every test: the real infrastructure and an isolated environment per test.

NATS and the MongoDB-compatible server are real. Each test gets its own environment name, so its streams,
consumers and databases are its own; they are deleted when the test ends.
"""

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import nats
import pytest
from pymongo import AsyncMongoClient

from contracts import Subjects
from servicekit import devstack
from servicekit.bus import delete_streams
from servicekit.mongo import connect_mongo

Document = dict[str, Any]


@dataclass(frozen=True)
class Infra:
    nats_url: str
    mongodb_url: str


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    root = tmp_path_factory.mktemp("infra")
    with (
        devstack.mongodb(root / "mongodb", root / "logs") as mongodb_url,
        devstack.nats(root / "nats", root / "logs") as nats_url,
    ):
        yield Infra(nats_url=nats_url, mongodb_url=mongodb_url)


@pytest.fixture(scope="session")
async def mongo(infra: Infra) -> AsyncIterator[AsyncMongoClient[Document]]:
    client = connect_mongo(infra.mongodb_url, 5000)
    yield client
    await client.close()


@pytest.fixture
async def env_name(infra: Infra, mongo: AsyncMongoClient[Document]) -> AsyncIterator[str]:
    """A fresh environment prefix; its streams and databases are removed afterwards."""
    name = "t" + uuid4().hex[:12]
    yield name
    nc = await nats.connect(infra.nats_url, connect_timeout=5)
    try:
        await delete_streams(nc.jetstream(timeout=5), Subjects(name))
    finally:
        await nc.close()
    for db in await mongo.list_database_names():
        if db.startswith(name + "_"):
            await mongo.drop_database(db)


@pytest.fixture
def service_env(infra: Infra, env_name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment variables that point a service's settings at this test's environment."""
    values = {"NATS_URL": infra.nats_url, "MONGODB_URL": infra.mongodb_url, "PLATFORM_ENV": env_name}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent
