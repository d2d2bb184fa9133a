"""Neptune's cost beside the REST calls it makes: time to the first streamed byte and to the final message of a chat
turn, for the offline parser and for the openai path (against the tests' OpenAI-compatible server, answering at
once: the model's own time is left out), 1 and 10 conversations at once; beside them, in the same run, the same
REST calls made straight to the gateway (what Neptune's tools and, on the openai path, its workspace context ask).

    .venv/bin/python bench/neptune.py [--quick] [--turns 60]

Two stacks are started as `make up` starts them (every service a process, SecantusDB and NATS of their own): one
with no model (the offline parser), one whose Neptune has a model endpoint. Two turns are measured: "list my teams"
(one query) and "remember that ..." (one command). The target: a turn takes at most 2x its REST calls.
"""

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from common import free_port_base, ms, pct

from servicekit import devstack

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.openai_server import OpenAICompatibleServer, Reply, Respond, reply_tool_call

SERVICE_ENV = {"LOG_LEVEL": "WARNING", "RELAY_POLL_INTERVAL_S": "0.5"}
CONTEXT_CALLS = [  # what the openai path reads for its system prompt, as model_turn.workspace_context does
    ("GET", "/api/v1/teams", None),
    ("GET", "/api/v1/workflows", None),
    ("GET", "/api/v1/workflows/executions?status=running&limit=20", None),
    ("GET", "/api/v1/workflows/executions?status=failed&limit=5", None),
    ("GET", "/api/v1/usage", None),
]
TURNS = {
    "list my teams": [("GET", "/api/v1/teams", None)],
    "remember that Initech renews in March": [
        ("POST", "/api/v1/memory/long-term", {"content": "Initech renews in March", "tags": []})
    ],
}
TOOL_OF = {"list my teams": ("list_agent_teams", {}), "remember": ("store_shared_context", {"fact": "Initech renews"})}


def answer(body: dict[str, Any]) -> Reply:
    """The instant model: the tool the message asks for, then an answer once its result is in."""
    if any(m.get("role") == "tool" for m in body.get("messages", [])):
        return Reply("Done.")
    said = str(body["messages"][-1].get("content", ""))
    name, arguments = TOOL_OF["remember" if said.startswith("remember") else "list my teams"]
    return reply_tool_call(name, arguments)


@contextmanager
def model_server() -> Iterator[str]:
    """The OpenAI-compatible server in a thread of its own (its own event loop); yields its base URL."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        holder["loop"], holder["stop"] = asyncio.get_running_loop(), asyncio.Event()
        async with OpenAICompatibleServer(default=Respond(answer)) as server:
            holder["url"] = server.base_url
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    ready.wait(30)
    try:
        yield str(holder["url"])
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(15)


@dataclass
class Samples:
    first_byte: list[float] = field(default_factory=list)
    final: list[float] = field(default_factory=list)
    rest: list[float] = field(default_factory=list)
    errors: int = 0


async def turn(client: httpx.AsyncClient, conversation_id: str, text: str) -> tuple[float, float]:
    started = time.perf_counter()
    first = final = 0.0
    path = f"/api/v1/neptune/conversations/{conversation_id}/messages"
    async with client.stream("POST", path, json={"content": text}) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not first:
                first = time.perf_counter() - started
            if line == "event: message":
                final = time.perf_counter() - started
            elif line == "event: error":
                raise RuntimeError("the turn ended with an error")
    if not final:
        raise RuntimeError("the turn had no answer")
    return first, final


async def rest(client: httpx.AsyncClient, calls: list[tuple[str, str, Any]]) -> float:
    started = time.perf_counter()
    for method, path, body in calls:
        resp = await client.request(method, path, json=body)
        resp.raise_for_status()
    return time.perf_counter() - started


async def worker(
    client: httpx.AsyncClient, conversation_id: str, text: str, direct: list[Any], samples: Samples, left: list[int]
) -> None:
    """Turns on one conversation, each followed by its REST calls made directly, until ``left`` runs out."""
    while left[0] > 0:
        left[0] -= 1
        try:
            first, final = await turn(client, conversation_id, text)
            samples.first_byte.append(first)
            samples.final.append(final)
            samples.rest.append(await rest(client, direct))
        except (httpx.HTTPError, RuntimeError):
            samples.errors += 1


async def measure(gateway: str, key: str, with_model: bool, turns: int, inflight: int) -> dict[str, Samples]:
    headers = {"Authorization": f"Bearer {key}"}
    found: dict[str, Samples] = {text: Samples() for text in TURNS}
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=120) as client:
        conversations = []
        for _ in range(inflight):
            created = await client.post("/api/v1/neptune/conversations", json={"title": "bench"})
            created.raise_for_status()
            conversations.append(created.json()["resource_ids"]["conversation_id"])
        for text, calls in TURNS.items():
            direct = (CONTEXT_CALLS if with_model else []) + calls
            samples = found[text]
            await turn(client, conversations[0], text)  # warm: the first turn of each kind is not measured
            left = [turns]
            await asyncio.gather(*(worker(client, c, text, direct, samples, left) for c in conversations))
    return found


def run_stack(args: argparse.Namespace, with_model: bool, model_url: str | None) -> dict[int, dict[str, Samples]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-neptune-"))
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    env = "bench" + uuid4().hex[:8]
    results: dict[int, dict[str, Samples]] = {}
    try:
        with (
            devstack.mongodb(workdir / "mongodb", logs) as mongodb_url,
            devstack.nats(workdir / "nats", logs) as nats_url,
        ):
            service_env = {
                **os.environ,
                **SERVICE_ENV,
                "MONGODB_URL": mongodb_url,
                "NATS_URL": nats_url,
                "PLATFORM_ENV": env,
            }
            service_env.pop("OPENAI_API_KEY", None)
            only = {
                "neptune": {"OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": model_url or "", "OPENAI_MAX_RETRIES": "0"}
            }
            os.environ["DEVSTACK_PORT_BASE"] = str(free_port_base())
            with devstack.services(service_env, logs, only=only if with_model else None) as stack:
                key = devstack.create_workspace(service_env, "bench")["api_key"]
                for inflight in (1, 10):
                    count = args.turns if inflight == 1 else args.turns * 2
                    results[inflight] = asyncio.run(measure(stack.urls["gateway"], key, with_model, count, inflight))
                    print(f"  {'openai' if with_model else 'offline'} path, {inflight} at once: measured", flush=True)
            asyncio.run(devstack.drop_environment(env, mongodb_url=mongodb_url, nats_url=nats_url))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def report(label: str, results: dict[int, dict[str, Samples]]) -> None:
    print(f"\n{label}")
    print(
        f"  {'turn':40} {'at once':>7} {'first byte p50':>14} {'final p50':>10} {'final p99':>10} "
        f"{'REST p50':>9} {'x REST':>7} {'errors':>6}"
    )
    for inflight, by_text in results.items():
        for text, s in by_text.items():
            ratio = pct(s.final, 0.5) / pct(s.rest, 0.5) if s.rest else float("nan")
            print(
                f"  {text:40} {inflight:>7} {ms(s.first_byte, 0.5):>14} {ms(s.final, 0.5):>10} "
                f"{ms(s.final, 0.99):>10} {ms(s.rest, 0.5):>9} {ratio:>7.2f} {s.errors:>6}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 turns of each kind, for a smoke test")
    parser.add_argument("--turns", type=int, help="turns of each kind one at a time (twice as many at 10; default 60)")
    args = parser.parse_args()
    args.turns = args.turns or (10 if args.quick else 60)
    started = time.perf_counter()
    print(
        "Neptune benchmark: a turn (to its first streamed byte and to its answer) beside its REST calls made directly"
    )
    offline = run_stack(args, with_model=False, model_url=None)
    with model_server() as url:
        with_model = run_stack(args, with_model=True, model_url=url)
    print(f"Measured in {time.perf_counter() - started:.0f}s (milliseconds; 'x REST' = final p50 / REST p50).")
    report("Offline parser (no model): the tool's REST call", offline)
    report("openai path (instant completions: two model calls a turn): context + tool REST calls", with_model)


if __name__ == "__main__":
    main()
