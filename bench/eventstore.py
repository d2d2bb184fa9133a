"""Event store throughput beside the raw pymongo driver, measured in the same run against the same server.

    .venv/bin/python bench/eventstore.py [--quick] [--appends N] [--concurrency C] [--replay-events R]

Appends: N one-event commits with expected versions (and a command id, as the command path writes them), first
by one writer, then by C concurrent writers on distinct streams; streams roll over every --per-stream commits.
Baseline: raw ``insert_one`` of a document of the same shape and size at the same concurrency, into a bare
collection ("raw driver") and into one with the event store's indexes ("raw, same indexes").

Replay: ``load_state`` over one stream of R events stored in commits of --events-per-commit. Baselines: a raw
``find().to_list()`` of R one-event documents by an indexed key (docs/s), and of the very same commit documents
(events/s, so only our decoding differs).

Nothing is asserted: the figures are printed side by side. Databases are named after a fresh environment prefix
and dropped at the end. MongoDB: MONGODB_URL when set, otherwise a SecantusDB server started for the run.
"""

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from uuid import uuid4

import bson
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from contracts import REGISTRY, Actor, Event, new_id
from servicekit import devstack
from servicekit.eventstore import EventStore, Metadata, StreamRef, load_state
from servicekit.mongo import connect_mongo

Document = dict[str, Any]
Op = Callable[[int, int], Awaitable[None]]
WORKSPACE = "ws_bench"
META = Metadata(correlation_id="bench", actor=Actor(kind="system", id="bench"))
TARGET = 0.5


@REGISTRY.register
class BenchCounted(Event):
    """The event appended and replayed by this benchmark."""

    aggregate: ClassVar[str] = "bench"
    by: int
    note: str


def count(state: int, event: Event) -> int:
    if not isinstance(event, BenchCounted):
        raise TypeError(f"unexpected event {event.type_name}")
    return state + event.by


@dataclass(frozen=True, slots=True)
class Row:
    metric: str
    ours: float
    raw: float
    raw_indexed: float | None = None


class Workload:
    """An operation ``op(writer, i)`` and how far each writer has got, so it can run in several rounds."""

    def __init__(self, op: Op) -> None:
        self.op = op
        self.progress: Counter[int] = Counter()
        self.rounds: list[tuple[int, float]] = []

    async def run(self, writers: int, total: int) -> None:
        """``total`` calls split over ``writers`` concurrent tasks; each writer continues where it stopped."""
        shares = [total // writers + (1 if w < total % writers else 0) for w in range(writers)]

        async def writer(w: int, n: int) -> None:
            for _ in range(n):
                i = self.progress[w]
                self.progress[w] += 1
                await self.op(w, i)

        start = time.perf_counter()
        await asyncio.gather(*(writer(w, n) for w, n in enumerate(shares)))
        self.rounds.append((total, time.perf_counter() - start))

    @property
    def rate(self) -> float:
        return sum(n for n, _ in self.rounds) / sum(t for _, t in self.rounds)

    def round_rate(self, index: int) -> float:
        n, t = self.rounds[index]
        return n / t


async def interleave(workloads: list[Workload], writers: int, total: int, rounds: int) -> None:
    """Run every workload ``total`` times, in ``rounds`` rounds taking turns (the first one rotating), so that
    the server's drift as data accumulates falls on all of them alike."""
    for r in range(rounds):
        n = total // rounds + (1 if r < total % rounds else 0)
        shift = r % len(workloads)
        for workload in workloads[shift:] + workloads[:shift]:
            if n:
                await workload.run(writers, n)


def store_appender(store: EventStore, phase: str, per_stream: int, note: str) -> Op:
    async def op(w: int, i: int) -> None:
        stream = StreamRef(WORKSPACE, "bench", f"{phase}-w{w}-s{i // per_stream}")
        await store.append(stream, i % per_stream, [BenchCounted(by=1, note=note)], META, command_id=new_id())

    return op


def raw_inserter(coll: AsyncCollection[Document], template: Document, phase: str, per_stream: int) -> Op:
    """insert_one of a copy of a stored one-event commit, with fresh ids and time: same shape and size."""

    async def op(w: int, i: int) -> None:
        doc = {
            **template,
            "_id": new_id(),
            "stream_id": f"{WORKSPACE}/bench/{phase}-w{w}-s{i // per_stream}",
            "first_version": i % per_stream + 1,
            "last_version": i % per_stream + 1,
            "command_id": new_id(),
            "recorded_at": datetime.now(UTC),
        }
        await coll.insert_one(doc)

    return op


async def timed_medians(reps: int, fns: list[Callable[[], Awaitable[None]]]) -> list[float]:
    """The median time of each function over ``reps`` rounds, the functions taking turns in every round."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            await fn()
            spent.append(time.perf_counter() - start)
    return [statistics.median(spent) for spent in times]


async def stored_template(store: EventStore, commits: AsyncCollection[Document], note: str) -> Document:
    """One one-event commit written by the store, read back raw: the template of every raw document."""
    await store_appender(store, "template", 1, note)(0, 0)
    template = await commits.find_one({"stream_id": f"{WORKSPACE}/bench/template-w0-s0"})
    if template is None:
        raise RuntimeError("template commit not found")
    return template


async def bench_appends(
    args: argparse.Namespace,
    store: EventStore,
    template: Document,
    raw: AsyncCollection[Document],
    indexed: AsyncCollection[Document],
) -> list[Row]:
    note = "n" * args.payload_bytes

    warm = max(20, args.appends // 20)
    await Workload(store_appender(store, "warm", args.per_stream, note)).run(2, warm)
    await Workload(raw_inserter(raw, template, "warm", args.per_stream)).run(2, warm)
    await Workload(raw_inserter(indexed, template, "warm", args.per_stream)).run(2, warm)

    rows = []
    for writers in (1, args.concurrency):
        phase = f"c{writers}"
        label = "appends/s, sequential" if writers == 1 else f"appends/s, {writers} concurrent writers"
        print(f"  {label}: {args.appends} of each, in {args.rounds} interleaved rounds ...", flush=True)
        ours = Workload(store_appender(store, phase, args.per_stream, note))
        plain = Workload(raw_inserter(raw, template, phase, args.per_stream))
        same_indexes = Workload(raw_inserter(indexed, template, phase, args.per_stream))
        await interleave([ours, plain, same_indexes], writers, args.appends, args.rounds)
        print(
            f"    server drift: raw insert_one/s {plain.round_rate(0):,.0f} in the first round, "
            f"{plain.round_rate(-1):,.0f} in the last; ours {ours.round_rate(0):,.0f} -> {ours.round_rate(-1):,.0f}",
            flush=True,
        )
        rows.append(Row(label, ours.rate, plain.rate, same_indexes.rate))
    return rows


async def bench_replay(
    args: argparse.Namespace,
    store: EventStore,
    template: Document,
    raw: AsyncCollection[Document],
    raw_commits: AsyncCollection[Document],
) -> list[Row]:
    total, per_commit = args.replay_events, args.events_per_commit
    note = "n" * args.payload_bytes
    stream = StreamRef(WORKSPACE, "bench", "replay")
    version = 0
    while version < total:
        size = min(per_commit, total - version)
        events = [BenchCounted(by=1, note=note) for _ in range(size)]
        await store.append(stream, version, events, META, command_id=new_id())
        version += size

    await raw.create_index([("stream_id", ASCENDING), ("first_version", ASCENDING)])
    docs = [
        {**template, "_id": new_id(), "stream_id": "replay", "first_version": v, "last_version": v}
        for v in range(1, total + 1)
    ]
    for start in range(0, total, 1000):
        await raw.insert_many(docs[start : start + 1000])

    async def ours_state() -> None:
        loaded = await load_state(store, stream, 0, count)
        if loaded.version != total or loaded.state != total:
            raise RuntimeError(f"replayed {loaded.version} events, expected {total}")

    async def ours_load() -> None:
        if len(await store.load(stream)) != total:
            raise RuntimeError("store.load returned a short stream")

    async def raw_docs() -> None:
        found = await raw.find({"stream_id": "replay"}, sort=[("first_version", ASCENDING)]).to_list()
        if len(found) != total:
            raise RuntimeError(f"raw find returned {len(found)} documents, expected {total}")

    async def raw_same_commits() -> None:
        found = await raw_commits.find({"stream_id": stream.stream_id}, sort=[("first_version", ASCENDING)]).to_list()
        if sum(len(d["events"]) for d in found) != total:
            raise RuntimeError("raw find of the commits returned a short stream")

    await timed_medians(1, [ours_state, ours_load, raw_docs, raw_same_commits])  # warm-up
    print(f"  replay of {total} events in commits of {per_commit} ...", flush=True)
    t_state, t_load, t_docs, t_commits = await timed_medians(
        args.reps, [ours_state, ours_load, raw_docs, raw_same_commits]
    )
    return [
        Row("replayed events/s (load_state) vs raw find docs/s", total / t_state, total / t_docs),
        Row("replayed events/s (load_state) vs raw find, same commits", total / t_state, total / t_commits),
        Row("loaded records/s (store.load) vs raw find, same commits", total / t_load, total / t_commits),
    ]


def render(rows: list[Row]) -> str:
    headers = ["metric", "ours", "raw driver", "ratio", "raw, same indexes", "ratio"]
    table = [headers]
    for r in rows:
        extra = ["-", "-"] if r.raw_indexed is None else [f"{r.raw_indexed:,.0f}", f"{r.ours / r.raw_indexed:.2f}"]
        table.append([r.metric, f"{r.ours:,.0f}", f"{r.raw:,.0f}", f"{r.ours / r.raw:.2f}", *extra])
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    lines = []
    for n, line in enumerate(table):
        cells = [line[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def run(args: argparse.Namespace, url: str, env: str) -> list[Row]:
    ours_client = connect_mongo(url, 30_000)
    raw_client: AsyncMongoClient[Document] = AsyncMongoClient(url)
    try:
        store = EventStore(ours_client[f"{env}_store"])
        await store.ensure_indexes()
        raw_db = raw_client[f"{env}_raw"]
        indexed_db = raw_client[f"{env}_rawindexed"]
        await EventStore(indexed_db).ensure_indexes()  # only to give that "commits" collection the store's indexes
        stored = raw_client[f"{env}_store"]["commits"]
        template = await stored_template(store, stored, "n" * args.payload_bytes)
        print(f"  one-event commit document: {len(bson.encode(template))} bytes of BSON", flush=True)
        rows = await bench_appends(args, store, template, raw_db["plain"], indexed_db["commits"])
        rows += await bench_replay(args, store, template, raw_db["replay"], stored)
        return rows
    finally:
        await devstack.drop_environment(env, mongodb_url=url)
        await ours_client.close()
        await raw_client.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run, to check the benchmark works")
    parser.add_argument("--appends", type=int, help="appends per phase (default 2000; --quick 200)")
    parser.add_argument("--concurrency", type=int, default=10, help="concurrent writers (default 10)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds of each append phase (default 10; --quick 4)")
    parser.add_argument("--per-stream", type=int, default=100, help="commits per stream before rolling over")
    parser.add_argument("--replay-events", type=int, help="events in the replayed stream (default 5000; --quick 500)")
    parser.add_argument("--events-per-commit", type=int, default=50, help="events per commit of the replayed stream")
    parser.add_argument("--reps", type=int, help="replays timed, median reported (default 7; --quick 2)")
    parser.add_argument("--payload-bytes", type=int, default=200, help="size of the event's text field")
    args = parser.parse_args(argv)
    args.appends = args.appends or (200 if args.quick else 2000)
    args.replay_events = args.replay_events or (500 if args.quick else 5000)
    args.reps = args.reps or (2 if args.quick else 7)
    args.rounds = args.rounds or (4 if args.quick else 10)
    sizes = (args.appends, args.concurrency, args.rounds, args.per_stream, args.replay_events, args.events_per_commit)
    if min(*sizes, args.reps, args.payload_bytes + 1) < 1:
        parser.error("sizes must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = "bench" + uuid4().hex[:10]
    workdir = Path(tempfile.mkdtemp(prefix=f"{env}-"))
    external = bool(os.environ.get("MONGODB_URL"))
    try:
        with devstack.mongodb(workdir / "mongodb", workdir / "logs") as server_url:
            url = server_url
            server = url if external else f"SecantusDB started for this run at {url}"
            print(f"Event store benchmark (environment {env}; MongoDB: {server})", flush=True)
            print(
                f"  appends={args.appends} concurrency={args.concurrency} rounds={args.rounds} "
                f"per_stream={args.per_stream} replay_events={args.replay_events} "
                f"events_per_commit={args.events_per_commit} reps={args.reps} payload_bytes={args.payload_bytes}",
                flush=True,
            )
            started = time.perf_counter()
            rows = asyncio.run(run(args, url, env))
            elapsed = time.perf_counter() - started
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(render(rows))
    print()
    print(f"Rates are per second; ratio = ours / raw (higher is better). Measured in {elapsed:.0f}s.")
    print(f"Target: event store >= {TARGET:.0%} of raw rates (ratio >= {TARGET:.2f}) against the raw driver column.")
    print("'raw, same indexes' inserts into a collection carrying the event store's secondary indexes.")


if __name__ == "__main__":
    main()
