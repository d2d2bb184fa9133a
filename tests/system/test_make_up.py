"""`make up`'s launcher started as a process: every service answers /readyz and the slice works over HTTP."""

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


async def _settled(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The execution once it has ended or waits for an approval."""
    deadline = time.monotonic() + 60
    while True:
        resp = await client.get(url, headers=headers)
        body: dict[str, Any] = resp.json() if resp.status_code == 200 else {"status": "unknown", "steps": []}
        if body["status"] in {"completed", "failed"} or any(s["status"] == "waiting" for s in body["steps"]):
            return body
        assert time.monotonic() < deadline, f"{url} never settled: {resp.text}"
        await asyncio.sleep(0.2)


async def test_every_template_runs_to_completion_on_make_up_alone(stack: tuple[str, str, int]) -> None:
    """What the README shows a new user, on the processes make up starts and nothing else: each workflow template,
    created on a fresh workspace (its agents are staffed), runs to ``completed`` with the local provider, and the
    branch taken follows the input."""
    gateway, key, _ = stack
    headers = {"Authorization": f"Bearer {key}"}
    inputs: dict[str, list[dict[str, Any]]] = {
        "support-ticket": [{"ticket": {"subject": "Cannot log in"}}, {"ticket": {"subject": "A question on exports"}}],
        "lead-to-customer": [
            {"lead": {"company": "Initech", "employees": 450, "notes": "enterprise, budget approved"}},
            {"lead": {"company": "Solo", "employees": 1, "notes": "student, just browsing"}},
        ],
        "content-campaign": [{"topic": "Agent teams for support desks", "audience": "support leads"}],
    }
    async with httpx.AsyncClient(timeout=10) as client:
        taken: dict[str, list[set[str]]] = {}
        for slug, cases in inputs.items():
            created = await client.post(f"{gateway}/api/v1/workflows", json={"template": slug}, headers=headers)
            assert created.status_code == 201, created.text
            workflow_id = created.json()["resource_ids"]["workflow_id"]
            for case in cases:
                started = await client.post(
                    f"{gateway}/api/v1/workflows/{workflow_id}/executions", json={"input": case}, headers=headers
                )
                assert started.status_code == 201, started.text
                url = f"{gateway}/api/v1/workflows/executions/{started.json()['resource_ids']['execution_id']}"
                run = await _settled(client, url, headers)
                for approval in [s for s in run["steps"] if s["status"] == "waiting"]:
                    decided = await client.post(
                        f"{url}/approvals/{approval['id']}", json={"approved": True}, headers=headers
                    )
                    assert decided.status_code == 200, decided.text
                    run = await _settled(client, url, headers)
                assert run["status"] == "completed", run
                taken.setdefault(slug, []).append({s["id"] for s in run["steps"] if s["status"] == "succeeded"})
        assert "escalate" in taken["support-ticket"][0]
        assert "respond" in taken["support-ticket"][1]
        assert "proposal" in taken["lead-to-customer"][0]
        assert "nurture" in taken["lead-to-customer"][1]
