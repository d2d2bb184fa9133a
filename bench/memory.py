"""Memory retrieval latency and store throughput, beside raw driver figures measured in the same run.

    .venv/bin/python bench/memory.py [--quick] [--sizes 10000,100000] [--queries 200] [--stores 1000]
        [--clients 1,10,50] [--concurrent-entries 10000] [--requests 300] [--only-concurrent] [--log-dir DIR]

Retrieval: N long-term entries in one workspace (written straight into the read model, as the projection would
leave them), then ``Retriever.retrieve`` for random queries: p50/p99 after the workspace's index is built (the
build is timed on its own). Baseline: the raw time to read the same candidate set (every long-term entry of the
workspace) with ``find().to_list()``.

Store: ``RememberLongTerm`` handled by the service's command handler (event store append) and its event applied
by the read-model projection, one after the other; baseline: raw ``insert_one`` of the same row.

Concurrent queries: the memory service and the gateway run as processes (``python -m memory``, ``python -m
gateway``) over a workspace of N long-term entries; C clients (1, 10, 50) each send their share of the requests one
after another, through the gateway (``GET /api/v1/memory/long-term/{id}``, ``POST /api/v1/memory/retrieve``) and
straight over the NATS query path (the same queries as request/reply). Each line shows p50/p99 beside the
single-client p50. The NATS lines alternate with the same queries to a second memory service that answers one
query at a time (QUERY_WORKERS=1, as every service did before its query subscriber had workers), so that both see
the same load on the machine. (Lists are left out: SecantusDB answers a sorted list by scanning the workspace,
1-2 s at 10,000 entries, which measures only the database.)
Nothing is asserted: the figures are printed side by side.
"""

import sys
from pathlib import Path

# This file is named memory.py, like the service's package: keep its folder from shadowing the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable, Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402
from uuid import uuid4  # noqa: E402

import httpx  # noqa: E402
from nats.aio.client import Client as NatsClient  # noqa: E402
from pymongo import AsyncMongoClient  # noqa: E402

from contracts import Actor, Envelope, Query, QueryReply, Subjects  # noqa: E402
from contracts.memory import GetMemory, LongTermFields, RememberLongTerm, RetrieveMemory, Tier  # noqa: E402
from gateway.admin import create_workspace  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402
from memory.domain.entries import LONG_TERM  # noqa: E402
from memory.handlers import build_router  # noqa: E402
from memory.projections import EntriesProjection  # noqa: E402
from memory.retrieval import Retriever  # noqa: E402
from servicekit import devstack  # noqa: E402
from servicekit.eventstore import EventStore, StreamRef  # noqa: E402
from servicekit.mongo import connect_mongo  # noqa: E402

Document = dict[str, Any]
WORKSPACE = "ws_bench"
VOCABULARY = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "pricing",
    "invoice",
    "renewal",
    "discount",
    "onboarding",
    "churn",
    "support",
    "ticket",
    "escalation",
    "refund",
    "shipping",
    "delay",
    "contract",
    "enterprise",
    "startup",
    "budget",
    "quarter",
    "meeting",
    "demo",
    "proposal",
    "security",
    "review",
    "soc2",
    "integration",
    "api",
    "migration",
    "roadmap",
    "feature",
    "request",
    "bug",
    "outage",
    "latency",
    "billing",
    "seat",
    "license",
    "trial",
    "upgrade",
    "downgrade",
    "procurement",
    "legal",
    "signature",
    "champion",
    "sponsor",
    "stakeholder",
    "risk",
    "forecast",
    "pipeline",
    "lead",
    "qualified",
]


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCABULARY) for _ in range(words))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def seed(db: Any, workspace_id: str, size: int, rng: random.Random, now: datetime) -> None:
    """``size`` long-term entries of ``workspace_id`` in the read model, as the projection would leave them."""
    rows, stamps = db["entries"], db["search_stamps"]
    batch: list[Document] = []
    for i in range(size):
        stamp = now - timedelta(days=rng.random() * 365)
        batch.append(
            {
                "_id": f"{workspace_id}/longterm/e{i}",
                "workspace_id": workspace_id,
                "tier": Tier.LONG_TERM.value,
                "entry_id": f"e{i}",
                "content": text(rng, 25),
                "tags": [rng.choice(VOCABULARY)],
                "source": "bench",
                "importance": round(rng.random(), 2),
                "deleted": False,
                "created_at": stamp,
                "updated_at": stamp,
                "version": 1,
            }
        )
        if len(batch) == 5000:
            await rows.insert_many(batch)
            batch = []
    if batch:
        await rows.insert_many(batch)
    await EntriesProjection(LONG_TERM, rows, stamps).ensure_indexes()


async def retrieval(client: AsyncMongoClient[Document], env: str, size: int, queries: int) -> dict[str, float]:
    db = client[f"{env}_memory_{size}"]
    rows, stamps = db["entries"], db["search_stamps"]
    rng = random.Random(size)
    now = datetime.now(UTC)
    await seed(db, WORKSPACE, size, rng, now)

    retriever = Retriever(rows, stamps)
    started = time.perf_counter()
    await retriever.retrieve(WORKSPACE, RetrieveMemory(query="warm up"), now)
    build_s = time.perf_counter() - started

    ours: list[float] = []
    for _ in range(queries):
        query = RetrieveMemory(query=text(rng, 3), limit=10)
        t0 = time.perf_counter()
        await retriever.retrieve(WORKSPACE, query, now)
        ours.append(time.perf_counter() - t0)

    raw: list[float] = []
    for _ in range(max(5, queries // 20)):
        t0 = time.perf_counter()
        await rows.find({"workspace_id": WORKSPACE, "tier": Tier.LONG_TERM.value, "deleted": False}).to_list(None)
        raw.append(time.perf_counter() - t0)
    await client.drop_database(db.name)
    return {
        "p50": pct(ours, 0.5) * 1000,
        "p99": pct(ours, 0.99) * 1000,
        "build": build_s * 1000,
        "raw_p50": pct(raw, 0.5) * 1000,
        "raw_p99": pct(raw, 0.99) * 1000,
    }


async def stores(client: AsyncMongoClient[Document], env: str, count: int) -> dict[str, float]:
    db = client[f"{env}_memory_store"]
    store = EventStore(db)
    await store.ensure_indexes()
    projection = EntriesProjection(LONG_TERM, db["entries"], db["stamps"])
    await projection.ensure_indexes()
    router = build_router(lambda: datetime.now(UTC), projection)
    rng = random.Random(1)
    started = time.perf_counter()
    for i in range(count):
        command = RememberLongTerm(entry_id=f"m{i}", fields=LongTermFields(content=text(rng, 25), tags=["bench"]))
        envelope = Envelope(
            message_id=uuid4().hex,
            type=command.type_name,
            workspace_id=WORKSPACE,
            correlation_id="bench",
            actor=Actor(kind="system", id="bench"),
            occurred_at=datetime.now(UTC),
            payload=command.model_dump(mode="json"),
        )
        await router.handle(envelope, store)
        for record in await store.load(StreamRef(WORKSPACE, LONG_TERM, f"m{i}")):
            await projection.handle(record, store)
    ours = count / (time.perf_counter() - started)

    raw_rows = db["raw"]
    started = time.perf_counter()
    for i in range(count):
        await raw_rows.insert_one(
            {"_id": f"r{i}", "workspace_id": WORKSPACE, "content": text(rng, 25), "tags": ["bench"]}
        )
    raw = count / (time.perf_counter() - started)
    await client.drop_database(db.name)
    return {"ours": ours, "raw": raw}


@contextmanager
def service(module: str, env: dict[str, str], log_dir: Path) -> Iterator[str]:
    """``python -m <module>`` on a free port until the block ends; yields its base URL once it is live."""
    port = devstack.free_port()
    url = f"http://127.0.0.1:{port}"
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / f"{module}.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module],
            env={**env, "HTTP_PORT": str(port), "LOG_LEVEL": "WARNING", "OTEL_SERVICE_NAME": module},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        devstack.wait_until(lambda: proc.poll() is None and devstack.http_ok(url + "/healthz"), 60, module)
        yield url
    finally:
        devstack.stop_process(proc)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    clients: int
    p50_ms: float
    p99_ms: float
    per_s: float
    failed: int


def print_header(size: int, requests: int) -> None:
    print()
    print(f"Concurrent queries over {size} long-term entries ({requests} requests per line, shared by the clients)")
    header = (
        f"{'path and query':<34} {'clients':>7} | {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} {'failed':>6} |"
        f" {'p50 / 1 client':>14}"
    )
    print(header)
    print("-" * len(header), flush=True)


def print_row(rows: list[Row]) -> None:
    """The last row, beside the single-client p50 of its path and query."""
    r = rows[-1]
    single = next((s.p50_ms for s in rows if s.name == r.name and s.clients == 1 and s.p50_ms), None)
    ratio = f"{r.p50_ms / single:.1f}x" if single else "-"
    print(
        f"{r.name:<34} {r.clients:>7} | {r.p50_ms:>8.1f} {r.p99_ms:>8.1f} {r.per_s:>7.0f} {r.failed:>6} | {ratio:>14}",
        flush=True,
    )


Call = Callable[[], Awaitable[None]]


async def timed(call: Call, clients: int, requests: int) -> tuple[list[float], int]:
    """``clients`` callers, each making its share of ``requests`` calls one after another: the latency of every call
    that succeeded, and how many failed."""
    latencies: list[float] = []
    failed = 0

    async def client(n: int) -> None:
        nonlocal failed
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                await call()
            except Exception:  # noqa: BLE001 - a benchmark counts failures and goes on
                failed += 1
            else:
                latencies.append(time.perf_counter() - t0)

    share = max(1, requests // clients)
    await asyncio.gather(*(client(share) for _ in range(clients)))
    return latencies, failed


async def concurrent_queries(
    mongo_url: str, nats_url: str, log_dir: Path, size: int, clients: list[int], requests: int
) -> list[Row]:
    """A row per path and query and number of clients, printed as it is measured. The NATS lines are measured
    twice, alternately: against the memory service as configured and against one answering a query at a time
    (QUERY_WORKERS=1, as every service did before its query subscriber had workers), each in its own environment
    with the same entries, so that both see the same load on the machine."""
    env, serial_env = "bench" + uuid4().hex[:8], "bench" + uuid4().hex[:8]
    settings = GatewaySettings(platform_env=env, mongodb_url=mongo_url, nats_url=nats_url)
    workspace = await create_workspace(settings, "Bench")
    workspace_id = workspace["workspace_id"]
    mongo = connect_mongo(mongo_url, 120_000)
    for name in (env, serial_env):
        await seed(mongo[Subjects(name).database("memory")], workspace_id, size, random.Random(7), datetime.now(UTC))
    await mongo.close()
    common = {**os.environ, "MONGODB_URL": mongo_url, "NATS_URL": nats_url}
    env_vars = {
        **common,
        "PLATFORM_ENV": env,
        "BACKEND_SERVICES": "memory",  # the gateway's /readyz asks only the service that runs here
        "QUERY_TIMEOUT_S": "60",  # measure how long a query waits, rather than a 503 after 5 s
    }
    serial_vars = {**common, "PLATFORM_ENV": serial_env, "QUERY_WORKERS": "1"}
    rng = random.Random(11)
    rows: list[Row] = []
    nc = NatsClient()
    try:
        with (
            service("memory", env_vars, log_dir),
            service("memory", serial_vars, log_dir / "one-at-a-time"),
            service("gateway", env_vars, log_dir) as gateway,
        ):
            await nc.connect(nats_url, connect_timeout=10)
            http = httpx.AsyncClient(
                base_url=gateway,
                headers={"Authorization": f"Bearer {workspace['api_key']}"},
                timeout=60,
                limits=httpx.Limits(max_connections=max(clients), max_keepalive_connections=max(clients)),
            )

            def over_nats(subjects: Subjects, make: Callable[[], Query]) -> Call:
                async def call() -> None:
                    query = make()
                    subject = subjects.query("memory", workspace_id, query.type_name)
                    reply = QueryReply.model_validate_json(
                        (await nc.request(subject, query.model_dump_json().encode(), timeout=60)).data
                    )
                    assert reply.ok, reply

                return call

            def get_query() -> Query:
                return GetMemory(tier=Tier.LONG_TERM, entry_id=f"e{rng.randrange(size)}")

            def retrieve_query() -> Query:
                return RetrieveMemory(query=text(rng, 3), tiers=[Tier.LONG_TERM], limit=10)

            async def gateway_get() -> None:
                (await http.get(f"/api/v1/memory/long-term/e{rng.randrange(size)}")).raise_for_status()

            async def gateway_retrieve() -> None:
                body = {"query": text(rng, 3), "tiers": ["long_term"], "limit": 10}
                (await http.post("/api/v1/memory/retrieve", json=body)).raise_for_status()

            ours, serial = Subjects(env), Subjects(serial_env)
            groups: list[list[tuple[str, Call]]] = [
                [("gateway GET long-term/id", gateway_get)],
                [("gateway POST retrieve", gateway_retrieve)],
                [
                    ("NATS GetMemory", over_nats(ours, get_query)),
                    ("NATS GetMemory, 1 at a time", over_nats(serial, get_query)),
                ],
                [
                    ("NATS RetrieveMemory", over_nats(ours, retrieve_query)),
                    ("NATS RetrieveMemory, 1 at a time", over_nats(serial, retrieve_query)),
                ],
            ]
            devstack.wait_until(lambda: devstack.http_ok(gateway + "/readyz"), 60, "gateway /readyz")
            for group in groups:  # warm up: the workspace's index, connections, key cache
                for _, call in group:
                    await timed(call, 5, 10)
            print_header(size, requests)
            for group in groups:
                for n in clients:
                    for name, call in group:
                        t0 = time.perf_counter()
                        latencies, failed = await timed(call, n, requests)
                        elapsed = time.perf_counter() - t0
                        p50, p99 = (pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000) if latencies else (0, 0)
                        rows.append(Row(name, n, p50, p99, len(latencies) / elapsed, failed))
                        print_row(rows)
            await http.aclose()
    finally:
        await nc.close()
        for name in (env, serial_env):
            await devstack.drop_environment(name, mongodb_url=mongo_url, nats_url=nats_url)
    return rows


async def bench(mongo_url: str, sizes: list[int], queries: int, store_count: int) -> None:
    env = "bench" + uuid4().hex[:8]
    client = connect_mongo(mongo_url, 120_000)
    try:
        results = []
        for size in sizes:
            results.append((size, await retrieval(client, env, size, queries)))
            print(f"  measured retrieval over {size} entries", flush=True)
        written = await stores(client, env, store_count)
    finally:
        await devstack.drop_environment(env, mongodb_url=mongo_url)
        await client.close()
    print()
    print(f"Retrieval ({queries} random 3-word queries, top 10) vs raw read of the candidate set (find().to_list())")
    header = (
        f"{'entries':>8} | {'p50 ms':>8} {'p99 ms':>8} {'index build ms':>15} |"
        f" {'raw read p50 ms':>16} {'raw p99 ms':>11}"
    )
    print(header)
    print("-" * len(header))
    for size, r in results:
        print(
            f"{size:>8} | {r['p50']:>8.2f} {r['p99']:>8.2f} {r['build']:>15.0f} |"
            f" {r['raw_p50']:>16.1f} {r['raw_p99']:>11.1f}"
        )
    print()
    print(
        f"Store ({store_count} long-term entries, one at a time): ours (command handler + projection) vs raw insert_one"
    )
    print(f"  ours {written['ours']:.0f}/s   raw {written['raw']:.0f}/s   ratio {written['ours'] / written['raw']:.2f}")
    print("Target: retrieval p99 under 100 ms at 10,000 entries.")
    print(f"(median raw read: {statistics.median(r['raw_p50'] for _, r in results):.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--stores", type=int, default=1000)
    parser.add_argument("--clients", default="1,10,50", help="concurrent clients of the query latency part")
    parser.add_argument("--concurrent-entries", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300, help="requests per line of the query latency part")
    parser.add_argument("--log-dir", type=Path, help="keep the services' logs of the query latency part here")
    parser.add_argument("--only-concurrent", action="store_true", help="only the concurrent query latency part")
    args = parser.parse_args()
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    queries, store_count = (50, 100) if args.quick else (args.queries, args.stores)
    entries, requests = (1000, 100) if args.quick else (args.concurrent_entries, args.requests)
    clients = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with devstack.mongodb(root / "mongodb", root) as mongo_url, devstack.nats(root / "nats", root) as nats_url:
            if not args.only_concurrent:
                asyncio.run(bench(mongo_url, sizes, queries, store_count))
            asyncio.run(concurrent_queries(mongo_url, nats_url, args.log_dir or root, entries, clients, requests))


if __name__ == "__main__":
    main()
