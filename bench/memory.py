"""Memory retrieval latency and store throughput, beside raw driver figures measured in the same run.

    .venv/bin/python bench/memory.py [--quick] [--sizes 10000,100000] [--queries 200] [--stores 1000]

Retrieval: N long-term entries in one workspace (written straight into the read model, as the projection would
leave them), then ``Retriever.retrieve`` for random queries: p50/p99 after the workspace's index is built (the
build is timed on its own). Baseline: the raw time to read the same candidate set (every long-term entry of the
workspace) with ``find().to_list()``.

Store: ``RememberLongTerm`` handled by the service's command handler (event store append) and its event applied
by the read-model projection, one after the other; baseline: raw ``insert_one`` of the same row.
Nothing is asserted: the figures are printed side by side.
"""

import sys
from pathlib import Path

# This file is named memory.py, like the service's package: keep its folder from shadowing the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402
from uuid import uuid4  # noqa: E402

from pymongo import AsyncMongoClient  # noqa: E402

from contracts import Actor, Envelope  # noqa: E402
from contracts.memory import LongTermFields, RememberLongTerm, RetrieveMemory, Tier  # noqa: E402
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


async def retrieval(client: AsyncMongoClient[Document], env: str, size: int, queries: int) -> dict[str, float]:
    db = client[f"{env}_memory_{size}"]
    rows, stamps = db["entries"], db["stamps"]
    rng = random.Random(size)
    now = datetime.now(UTC)
    batch: list[Document] = []
    for i in range(size):
        stamp = now - timedelta(days=rng.random() * 365)
        batch.append(
            {
                "_id": f"{WORKSPACE}/longterm/e{i}",
                "workspace_id": WORKSPACE,
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
    args = parser.parse_args()
    sizes = [1000] if args.quick else [int(s) for s in args.sizes.split(",")]
    queries, store_count = (50, 100) if args.quick else (args.queries, args.stores)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with devstack.mongodb(root / "mongodb", root) as mongo_url:
            asyncio.run(bench(mongo_url, sizes, queries, store_count))


if __name__ == "__main__":
    main()
