"""Latency and throughput of a command through the gateway, beside the floor of raw operations it cannot avoid.

    .venv/bin/python bench/command_path.py [--quick] [--requests N] [--levels 1,10,50]

The five services run as processes (servicekit.devstack.services) in a fresh environment. Each request is a
fresh ``POST /api/v1/agents``: gateway -> JetStream -> orchestrator -> event store -> outcome -> 201.

The floor, measured in the same run at the same concurrency, is one iteration of the raw operations the path
cannot avoid, back to back and without our code: a JetStream publish with ack (nats-py, to a scratch stream), a
find of a few documents by an indexed key and an ``insert_one`` (raw pymongo), and a NATS core request/reply
round trip (to a tiny nats-py responder). The MongoDB-compatible server slows down as data accumulates, so at
each level half of the floor's iterations run before the requests and half after.

Nothing is asserted: the figures are printed side by side. The environment's streams and databases are deleted
at the end. MongoDB: MONGODB_URL when set, otherwise a SecantusDB server started for the run; NATS: NATS_URL
(default nats://127.0.0.1:4222), or a nats-server started for the run when nothing answers there.
"""

import argparse
import asyncio
import itertools
import math
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import nats
from common import CpuMeter, Probe, aligned, free_port_base
from nats.aio.msg import Msg
from nats.js.api import StorageType, StreamConfig
from pymongo import ASCENDING, AsyncMongoClient

from contracts import new_id
from servicekit import devstack

Document = dict[str, Any]
Attempt = Callable[[int], Awaitable[str | None]]  # returns None on success, else what went wrong
FLOOR_KEYS = 1000
DOCS_PER_KEY = 3
PAYLOAD = b"x" * 700  # about the size of a RegisterAgent envelope


@dataclass
class Level:
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the successful attempts' latencies, in milliseconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return 1000 * ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))]

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else math.nan


async def drive(concurrency: int, total: int, attempt: Attempt, level: Level | None = None) -> Level:
    """``total`` attempts by ``concurrency`` workers, each starting its next attempt when the last one ends;
    added to ``level`` when given."""
    level = level or Level(concurrency)
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < total:
            start = time.perf_counter()
            error = await attempt(i)
            if error is None:
                level.latencies.append(time.perf_counter() - start)
            else:
                level.errors[error] += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    level.elapsed += time.perf_counter() - start
    return level


CPU_GROUPS = ("gateway", "orchestrator", "other services", "mongodb", "nats-server", "bench client")


def cpu_group(module: str) -> str:
    return module if module in ("gateway", "orchestrator") else "other services"


@dataclass
class Usage:
    """CPU seconds per process group and MongoDB operations, summed over the runs measured."""

    cpu: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)

    async def measure(self, probe: Probe, run: Awaitable[Level]) -> Level:
        cpu_before, ops_before = await probe.sample()
        level = await run
        cpu_after, ops_after = await probe.sample()
        for group, spent in cpu_after.items():
            self.cpu[group] = self.cpu.get(group, 0.0) + spent - cpu_before.get(group, 0.0)
        for name, n in ops_after.items():
            self.ops[name] = self.ops.get(name, 0) + n - ops_before.get(name, 0)
        return level


def gateway_attempt(client: httpx.AsyncClient, api_key: str, statuses: Counter[int]) -> Attempt:
    headers = {"Authorization": f"Bearer {api_key}"}

    async def attempt(i: int) -> str | None:
        spec = {"name": f"bench agent {new_id()[:12]}", "role": "bench", "capabilities": ["benchmarking"]}
        try:
            resp = await client.post("/api/v1/agents", json=spec, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        statuses[resp.status_code] += 1
        return None if 200 <= resp.status_code < 300 else f"HTTP {resp.status_code}"

    return attempt


def floor_names(env: str) -> tuple[str, str, str]:
    """The scratch stream, its subject prefix and the request/reply subject of the floor."""
    return f"{env}_BENCHFLOOR", f"{env}.benchfloor", f"{env}.benchrpc"


@asynccontextmanager
async def floor(nats_url: str, mongodb_url: str, env: str, timeout_s: float) -> AsyncIterator[Attempt]:
    """The floor's iteration, with its scratch stream, responder and indexed collection set up around it."""
    stream, subject, rpc = floor_names(env)
    nc = await nats.connect(nats_url, connect_timeout=10)
    responder = await nats.connect(nats_url, connect_timeout=10)
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(mongodb_url)
    js = nc.jetstream(timeout=timeout_s)
    try:
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{subject}.>"], storage=StorageType.FILE))

        async def respond(msg: Msg) -> None:
            await msg.respond(msg.data)

        await responder.subscribe(rpc, cb=respond)
        await responder.flush()
        docs = mongo[f"{env}_floor"]["docs"]
        await docs.create_index([("key", ASCENDING)])
        seed = [{"_id": new_id(), "key": k, "payload": PAYLOAD} for k in range(FLOOR_KEYS) for _ in range(DOCS_PER_KEY)]
        await docs.insert_many(seed)

        async def attempt(i: int) -> str | None:
            try:
                await js.publish(f"{subject}.{i % 100}", PAYLOAD, headers={"Nats-Msg-Id": new_id()})
                found = await docs.find({"key": i % FLOOR_KEYS}).to_list()
                if len(found) != DOCS_PER_KEY:
                    return "short find"
                await docs.insert_one({"_id": new_id(), "key": FLOOR_KEYS + i, "payload": PAYLOAD})
                await nc.request(rpc, PAYLOAD, timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - counted and reported as an error of the floor
                return type(exc).__name__
            return None

        yield attempt
    finally:
        try:
            await js.delete_stream(stream)
        finally:
            await responder.close()
            await nc.close()
            await mongo.close()


@dataclass(frozen=True, slots=True)
class Result:
    ours: Level
    floor: Level
    statuses: Counter[int]
    ours_usage: Usage
    floor_usage: Usage


async def measure(
    args: argparse.Namespace, gateway_url: str, api_key: str, nats_url: str, mongodb_url: str, env: str
) -> list[Result]:
    widest = max(args.levels)
    timeout = httpx.Timeout(args.timeout, connect=10.0)
    limits = httpx.Limits(max_connections=widest, max_keepalive_connections=widest)
    results = []
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=timeout, limits=limits) as client,
        floor(nats_url, mongodb_url, env, args.timeout) as floor_attempt,
        AsyncMongoClient[Document](mongodb_url) as status_mongo,
    ):
        warm_up = Counter[int]()
        await drive(min(5, widest), args.warmup, gateway_attempt(client, api_key, warm_up))
        await drive(min(5, widest), args.warmup, floor_attempt)
        print(f"  warm-up: {args.warmup} requests, statuses {dict(warm_up)}", flush=True)
        probe = Probe(status_mongo, CpuMeter(cpu_group))
        for concurrency in args.levels:
            # The server slows down as data accumulates, so the floor brackets ours: half before, half after.
            statuses = Counter[int]()
            ours_usage, floor_usage = Usage(), Usage()
            floor_level = await floor_usage.measure(probe, drive(concurrency, args.requests // 2, floor_attempt))
            gateway = gateway_attempt(client, api_key, statuses)
            ours = await ours_usage.measure(probe, drive(concurrency, args.requests, gateway))
            rest = args.requests - args.requests // 2
            await floor_usage.measure(probe, drive(concurrency, rest, floor_attempt, floor_level))
            results.append(Result(ours, floor_level, statuses, ours_usage, floor_usage))
            print(
                f"  {concurrency} concurrent: ours p50 {ours.percentile(50):.1f} ms, floor p50 "
                f"{floor_level.percentile(50):.1f} ms, statuses {dict(statuses)}",
                flush=True,
            )
    return results


def render(results: list[Result]) -> str:
    headers = [
        "clients",
        "ours p50 ms",
        "ours p99 ms",
        "ours req/s",
        "errors",
        "floor p50 ms",
        "floor p99 ms",
        "floor it/s",
        "p50 ratio",
    ]
    table = [headers]
    for r in results:
        table.append(
            [
                str(r.ours.concurrency),
                f"{r.ours.percentile(50):.1f}",
                f"{r.ours.percentile(99):.1f}",
                f"{r.ours.throughput:.1f}",
                str(r.ours.errors.total()),
                f"{r.floor.percentile(50):.1f}",
                f"{r.floor.percentile(99):.1f}",
                f"{r.floor.throughput:.1f}",
                f"{r.ours.percentile(50) / r.floor.percentile(50):.1f}x",
            ]
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = []
    for n, line in enumerate(table):
        lines.append("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_usage(results: list[Result]) -> tuple[str, str]:
    """Per request (ours) or iteration (floor): CPU of each process group with its share of one core; and the
    MongoDB operations the server counted."""
    groups = [g for g in CPU_GROUPS if any(g in r.ours_usage.cpu for r in results)]
    ops = {"insert": "inserts", "query": "queries", "update": "updates", "getmore": "getMores", "command": "commands"}
    op_names = [n for n in ops if any(n in r.ours_usage.ops for r in results)]
    cpu_table = [["clients", "run", *groups]]
    ops_table = [["clients", "run", *(ops[n] for n in op_names), "total"]]
    for r in results:
        for run, level, usage in (("ours", r.ours, r.ours_usage), ("floor", r.floor, r.floor_usage)):
            n = len(level.latencies) + level.errors.total()
            cells = [str(level.concurrency), run]
            for group in groups:
                spent = usage.cpu.get(group)
                cells.append("-" if spent is None else f"{1000 * spent / n:.1f} ms {spent / level.elapsed:4.0%}")
            cpu_table.append(cells)
            counts = [usage.ops.get(name, 0) / n for name in op_names]
            ops_table.append([str(level.concurrency), run, *(f"{c:.1f}" for c in counts), f"{sum(counts):.1f}"])
    return aligned(cpu_table), aligned(ops_table) if op_names else "(the server reports no opcounters)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run, to check the benchmark works")
    parser.add_argument(
        "--requests", type=int, help="requests (and floor iterations) per level (default 300; --quick 30)"
    )
    parser.add_argument("--levels", default="1,10,50", help="comma-separated concurrency levels (default 1,10,50)")
    parser.add_argument("--warmup", type=int, help="unmeasured requests first (default 30; --quick 10)")
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs and print where they are")
    args = parser.parse_args(argv)
    args.requests = args.requests or (30 if args.quick else 300)
    args.warmup = args.warmup or (10 if args.quick else 30)
    try:
        args.levels = [int(v) for v in args.levels.split(",") if v.strip()]
    except ValueError:
        parser.error("--levels takes integers, e.g. 1,10,50")
    if not args.levels or min(args.levels) < 1 or args.requests < 1:
        parser.error("levels and sizes must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = "bench" + uuid4().hex[:10]
    workdir = Path(tempfile.mkdtemp(prefix=f"{env}-"))
    logs = workdir / "logs"
    external = bool(os.environ.get("MONGODB_URL"))
    try:
        with (
            devstack.mongodb(workdir / "mongodb", logs) as server_url,
            devstack.nats(workdir / "nats", logs) as nats_url,
        ):
            mongodb_url = server_url
            server = mongodb_url if external else f"SecantusDB started for this run at {mongodb_url}"
            print(f"Command path benchmark (environment {env}; MongoDB: {server}; NATS: {nats_url})", flush=True)
            print(f"  requests per level={args.requests} levels={args.levels} warmup={args.warmup}", flush=True)
            service_env = {**os.environ, "MONGODB_URL": mongodb_url, "NATS_URL": nats_url, "PLATFORM_ENV": env}
            started = time.perf_counter()
            os.environ["DEVSTACK_PORT_BASE"] = str(free_port_base())
            try:
                with devstack.services(service_env, logs) as stack:
                    urls = stack.urls
                    api_key = devstack.create_workspace(service_env, "bench")["api_key"]
                    print(
                        f"  services up in {time.perf_counter() - started:.0f}s; gateway at {urls['gateway']}",
                        flush=True,
                    )
                    results = asyncio.run(measure(args, urls["gateway"], api_key, nats_url, mongodb_url, env))
            finally:
                asyncio.run(
                    devstack.drop_environment(
                        env, mongodb_url=mongodb_url, nats_url=nats_url, extra_streams=[floor_names(env)[0]]
                    )
                )
            elapsed = time.perf_counter() - started
    finally:
        if args.keep_logs:
            shutil.rmtree(workdir / "mongodb", ignore_errors=True)
            print(f"Logs kept in {logs}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(render(results))
    print()
    print(
        "ours: POST /api/v1/agents end to end (201 = outcome received); errors = non-2xx or no response. "
        "floor: one iteration of JetStream publish+ack, find of a few docs by an indexed key, insert_one and a "
        "NATS core request/reply, back to back. p50 ratio = ours p50 / floor p50."
    )
    for r in results:
        pending = r.statuses.get(202, 0)
        if r.ours.errors or r.floor.errors or pending:
            print(
                f"  {r.ours.concurrency} clients: errors {dict(r.ours.errors)}, 202 pending {pending}, "
                f"floor errors {dict(r.floor.errors)}"
            )
    print(f"Measured in {elapsed:.0f}s. Targets: p50 <= 3x floor at 10 clients; no errors at 50 clients.")
    print()
    cpu_table, ops_table = render_usage(results)
    print(
        "Where the work goes, per request (ours) or per iteration (floor): CPU time of each process, and its share "
        f"of one core over the run ({os.cpu_count()} cores here)"
    )
    print(cpu_table)
    print()
    print("MongoDB operations per request (ours) or per iteration (floor), as counted by the server (serverStatus)")
    print(ops_table)


if __name__ == "__main__":
    main()
