"""`make up`'s launcher started as a process: every service answers /readyz and the slice works over HTTP."""

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import Infra
from servicekit.devstack import SERVICES, port_open

pytestmark = pytest.mark.system


def _free_port_base() -> int:
    for _ in range(100):
        # Below Linux's ephemeral range (32768+), where the kernel would hand ports to outgoing connections.
        base = random.randrange(20000, 32000, 10)
        if not any(port_open("127.0.0.1", base + i) for i in range(len(SERVICES))):
            return base
    raise RuntimeError("no free port range")


def _read_until(proc: subprocess.Popen[bytes], marker: str, timeout_s: float) -> list[str]:
    """Read the process's output (unbuffered, so select() tells the truth) until a line holds ``marker``."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    output = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            chunk = os.read(fd, 65536)
            output += chunk
            lines = output.decode(errors="replace").splitlines()
            if any(marker in line for line in lines):
                return lines
            if not chunk:
                break
    raise AssertionError(f"{marker!r} not printed; output so far:\n{output.decode(errors='replace')}")


@pytest.fixture
def stack(infra: Infra, env_name: str, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    base = _free_port_base()
    env = {
        **{k: v for k, v in os.environ.items() if k != "LOCAL_LLM"},  # the real model has a test of its own
        "MONGODB_URL": infra.mongodb_url,
        "NATS_URL": infra.nats_url,
        "PLATFORM_ENV": env_name,
        "DEVSTACK_PORT_BASE": str(base),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "servicekit.devstack", "up", "--root", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        lines = _read_until(proc, "API key:", 120)
        key = next(line.split("API key:")[1].strip() for line in lines if "API key:" in line)
        gateway = next(line.split("Gateway:")[1].split()[0] for line in lines if "Gateway:" in line)
        yield gateway, key, base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
    assert not any(port_open("127.0.0.1", base + i) for i in range(len(SERVICES))), "Ctrl-C stops every service"


async def test_every_service_is_ready_and_the_slice_works_over_http(stack: tuple[str, str, int]) -> None:
    gateway, key, base = stack
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=10) as client:
        for i, svc in enumerate(SERVICES):
            ready = await client.get(f"http://127.0.0.1:{base + i}/readyz")
            assert ready.status_code == 200, f"{svc.name}: {ready.text}"
            assert ready.json()["checks"] == {"nats": True, "mongodb": True}

        created = await client.post(
            f"{gateway}/api/v1/agents", json={"name": "Proposal writer", "role": "sales"}, headers=headers
        )
        assert created.status_code == 201, created.text
        agent_url = gateway + created.headers["Location"]
        deadline = time.monotonic() + 10
        while (resp := await client.get(agent_url, headers=headers)).status_code == 404:
            assert time.monotonic() < deadline, "the agent never reached the read model"
            await client.get(f"{gateway}/healthz")
        assert resp.status_code == 200
        assert resp.json()["name"] == "Proposal writer"

        spec = await client.get(f"{gateway}/openapi.json")
        assert "/api/v1/agents" in spec.json()["paths"]
