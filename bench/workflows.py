"""Workflow engine throughput and per-step overhead, beside the floor measured in the same run.

    .venv/bin/python bench/workflows.py [--quick] [--sizes 100,1000] [--inflight 10,100]

The engine runs as its own process (``python -m workflow_engine``); this process drives it over NATS: it sends
ExecuteWorkflow commands for a 3-step agent workflow, keeping a fixed number of executions in flight, and plays
an agent worker that completes every task at once. Per-step overhead is the time from sending a step's task
result to receiving the next step's task. Throughput counts completed executions and steps.

The floor does, for the same number of steps and the same concurrency, the JetStream publish+consume pairs and
event-store appends the engine makes per step (PAIRS_PER_STEP, APPENDS_PER_STEP), in the same chain: raw nats-py
publishes and fetches, and ``EventStore.append`` of the events the engine commits for a step (the step's success and
the next step's scheduling), and nothing else. Nothing is asserted: the figures are printed side by side.
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

from common import ACTOR, ENGINE, SPEC, WORKER, WORKSPACE, Document, Driver, Figures, engine_process, pct, quiesce
from nats.js.api import ConsumerConfig, RetentionPolicy, StreamConfig
from pymongo import AsyncMongoClient

from contracts import Event, Subjects
from contracts.workflows import CreateWorkflow, RecordTaskResult, StepScheduled, StepSucceeded
from servicekit import devstack
from servicekit.commands import envelope_for, publish_command
from servicekit.eventstore import EventStore, Metadata, StreamRef, utcnow
from servicekit.mongo import connect_mongo
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings

# What the engine does per step between a task result and the next task: two JetStream publishes, each consumed
# by a durable pull consumer, the result command (worker -> engine) and the next task (engine -> worker); and one
# event-store append (the commit of the result and the next step). The executor acts on that commit in-process,
# through the relay, not through a consumer of the EVENTS stream. Everything else the engine does per step (its
# decisions, the relay's publishing of events, timers, read models) is the overhead being measured.
PAIRS_PER_STEP = 2
APPENDS_PER_STEP = 1


async def floor(nc: Any, db: Any, env: str, steps: int, inflight: int) -> Figures:
    """Per step, what the engine's hand-over from one step to the next is made of, without the engine: the same
    chain of JetStream publish+consume pairs (PAIRS_PER_STEP, each hop through its own shared durable pull
    consumer fetching up to 16 at a time) and event-store appends (``EventStore.append`` of the events the engine
    commits for a step, after the first hop), ``inflight`` chains at a time."""
    js = nc.jetstream(timeout=10)
    stream = f"{env}_FLOOR"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{env}.floor.>"], retention=RetentionPolicy.WORK_QUEUE))
    store = EventStore(db)
    await store.ensure_indexes()
    meta = Metadata(correlation_id="floor", actor=WORKER)
    run = uuid4().hex[:8]  # each run's lanes are new streams
    waiting: dict[str, asyncio.Future[None]] = {}
    latencies: list[float] = []
    body = RecordTaskResult(execution_id="ex_floor", step_id="a", attempt=1, ok=True, output={"ok": 1})
    payload = envelope_for(body, workspace_id=WORKSPACE, command_id="floor", actor=WORKER).model_dump_json().encode()
    at = utcnow().isoformat()
    step_events: list[Event] = [
        StepSucceeded(step_id="a", attempt=1, output={"ok": 1}, at=at),
        StepScheduled(step_id="b", attempt=1, key="floor:b:1", input={"ok": 1}, at=at, timeout_at=at),
    ]

    async def consume(hop: int) -> None:
        sub = await js.pull_subscribe(
            f"{env}.floor.{hop}.*", durable=f"floor{hop}", stream=stream, config=ConsumerConfig(ack_wait=30)
        )
        while True:
            try:
                msgs = await sub.fetch(16, timeout=1)
            except TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                arrived = waiting.pop(msg.headers["Nats-Msg-Id"], None)
                if arrived is not None and not arrived.done():
                    arrived.set_result(None)

    async def hop(number: int, lane: int) -> None:
        msg_id = uuid4().hex
        arrived = waiting[msg_id] = asyncio.get_running_loop().create_future()
        await js.publish(f"{env}.floor.{number}.{lane}", payload, headers={"Nats-Msg-Id": msg_id})
        await arrived

    consumers = [asyncio.create_task(consume(number)) for number in range(PAIRS_PER_STEP)]

    async def lane_work(lane: int, count: int) -> None:
        for i in range(count):
            t0 = time.perf_counter()
            for number in range(PAIRS_PER_STEP):
                await hop(number, lane)
                if number == 0:
                    for k in range(APPENDS_PER_STEP):
                        version = (i * APPENDS_PER_STEP + k) * len(step_events)
                        stream = StreamRef(WORKSPACE, "floor", f"{run}-{lane}")
                        await store.append(stream, version, step_events, meta, command_id=uuid4().hex)
            latencies.append(time.perf_counter() - t0)

    per_lane = max(1, steps // inflight)
    started = time.perf_counter()
    await asyncio.gather(*(lane_work(i, per_lane) for i in range(inflight)))
    elapsed = time.perf_counter() - started
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    await js.delete_stream(stream)
    done = per_lane * inflight
    return Figures(done / 3 / elapsed, done / elapsed, pct(latencies, 0.5) * 1000, pct(latencies, 0.99) * 1000, 0)


async def bench(mongo_url: str, nats_url: str, sizes: list[int], inflights: list[int], log_dir: Path) -> None:
    env = "bench" + uuid4().hex[:8]
    os_env = {**os.environ, "PLATFORM_ENV": env, "MONGODB_URL": mongo_url, "NATS_URL": nats_url}
    settings = ServiceSettings(service_name="bench-driver", platform_env=env, nats_url=nats_url, mongodb_url=mongo_url)
    runtime = Runtime(settings)
    await runtime.open()
    driver = Driver(runtime)
    subjects = Subjects(env)
    await driver.start()
    rows: list[tuple[int, int, Figures, Figures]] = []
    mongo: AsyncMongoClient[Document] = connect_mongo(mongo_url, 10_000)
    try:
        with engine_process(os_env, log_dir):
            workflow_id = "wf_bench"
            create = CreateWorkflow(workflow_id=workflow_id, spec=SPEC)
            await publish_command(
                runtime.bus, ENGINE, envelope_for(create, workspace_id=WORKSPACE, command_id=uuid4().hex, actor=ACTOR)
            )
            await asyncio.sleep(1.0)
            await driver.run(workflow_id, 20, 10)  # warm-up
            for size in sizes:
                for inflight in inflights:
                    await quiesce(runtime.bus.js, subjects)
                    ours = await driver.run(workflow_id, size, inflight)
                    await quiesce(runtime.bus.js, subjects)
                    base = await floor(runtime.bus.nc, mongo[f"{env}_floor"], env, size * 3, inflight)
                    rows.append((size, inflight, ours, base))
                    print(f"  measured N={size} in-flight={inflight}", flush=True)
    finally:
        await runtime.stop()
        await mongo.close()
        await devstack.drop_environment(env, mongodb_url=mongo_url, nats_url=nats_url, extra_streams=[f"{env}_FLOOR"])
    print()
    print("Workflow engine (3 agent steps, tasks completed at once) vs floor (per step, in a chain:")
    print(f"{PAIRS_PER_STEP} JetStream publish+consume pairs and {APPENDS_PER_STEP} event-store append;", end=" ")
    print("same concurrency).")
    print("Overhead: task result sent -> next task received.")
    header = (
        f"{'N':>6} {'in-flight':>9} | {'exec/s':>8} {'steps/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} |"
        f" {'floor steps/s':>13} {'floor p50':>9} {'floor p99':>9} | {'p50 ratio':>9}"
    )
    print(header)
    print("-" * len(header))
    for size, inflight, ours, base in rows:
        print(
            f"{size:>6} {inflight:>9} | {ours.executions_s:>8.1f} {ours.steps_s:>8.1f} {ours.p50_ms:>8.1f}"
            f" {ours.p99_ms:>8.1f} {ours.errors:>4} | {base.steps_s:>13.1f} {base.p50_ms:>9.1f} {base.p99_ms:>9.1f} |"
            f" {ours.p50_ms / base.p50_ms:>9.2f}"
        )
    print("Targets: per-step overhead p50 < 3x the floor's per-step p50;")
    print("         throughput does not fall as in-flight executions grow from 10 to 100.")
    print(f"(median of floor p50s: {statistics.median(r[3].p50_ms for r in rows):.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--inflight", default="10,100")
    args = parser.parse_args()
    sizes = [50] if args.quick else [int(s) for s in args.sizes.split(",")]
    inflights = [int(s) for s in args.inflight.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with (
            devstack.mongodb(root / "mongodb", root) as mongo_url,
            devstack.nats(root / "nats", root) as nats_url,
        ):
            asyncio.run(bench(mongo_url, nats_url, sizes, inflights, root))


if __name__ == "__main__":
    main()
