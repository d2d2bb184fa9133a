"""The agent runtime's own cost, end-to-end latency through the gateway, and LangGraph beside us, in one run.

    .venv/bin/python bench/agent_runtime.py [--quick] [--size 300] [--inflight 10,100] [--reps 2] [--e2e 50]

One SecantusDB (started here, or MONGODB_URL) and one NATS (NATS_URL, default 127.0.0.1:4222, or one started
here) serve everything. Two environments run side by side on them, idle while the other is measured:

- "bench worker": the workflow engine and the instant bench worker of bench/common.py, each a process;
- "runtime": every service and the real agent runtime (``python -m orchestrator.runtime``), as ``make up`` runs
  them, with two agents of the steps' role (concurrency limit 100 each, local provider, so neither the limit nor a
  model is what is measured).

1. The 3-step workflow of bench/workflows.py, ``--size`` executions at each in-flight level, sent as
   ExecuteWorkflow commands, once per environment (interleaved, ``--reps`` times). A passive subscriber on the
   task and result subjects times every step the same way in both: the step cycle (a task published -> the next
   step's task published, the per-step overhead), split into the worker's part (task -> its result) and the
   engine's (result -> next task). Beside them: MongoDB round trips and CPU per step, by process.
2. End to end through the gateway, one execution at a time: POST /api/v1/workflows/{id}/executions ->
   ExecutionCompleted (heard on the EVENTS stream's subject).
3. LangGraph (bench/requirements.txt) with its MongoDB checkpointer (langgraph-checkpoint-mongodb's
   MongoDBSaver; its async methods run the sync pymongo client in the event loop's default executor, sized here
   to the in-flight level) running the same 3-node graph of instant nodes, in this process, against the same
   server at the same in-flight levels: with its default durability ("async": a step's checkpoint is written while
   the next step runs) and with "sync" (written before the next step starts, as our engine commits a step before
   its next task).

Nothing is asserted; the figures are printed side by side with the targets. The environments' streams and
databases are deleted at the end.
"""

import argparse
import asyncio
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from common import (
    ACTOR,
    ENGINE,
    PREVIOUS_STEP,
    ROLE,
    SPEC,
    WORKSPACE,
    CpuMeter,
    Document,
    Driver,
    Meter,
    Probe,
    aligned,
    free_port_base,
    ms,
    pct,
    quiesce,
    service_process,
    spread,
)
from pymongo import AsyncMongoClient

from contracts import Subjects
from contracts.agents import AgentSpec, ModelSetting, RegisterAgent
from contracts.workflows import CreateWorkflow
from servicekit import devstack
from servicekit.commands import envelope_for, publish_command
from servicekit.mongo import connect_mongo
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings

REPO = Path(__file__).resolve().parent.parent
AGENTS = 2
IDLE_S = 5.0
AGENT_LIMIT = 100  # the largest concurrency limit an agent may have
WORKFLOW_ID = "wf_bench"
SERVICE_ENV = {"LOG_LEVEL": "WARNING", "RELAY_POLL_INTERVAL_S": "0.5"}
CPU_GROUPS = {
    "workflow_engine": "engine",
    "orchestrator.runtime": "runtime",
    "common": "bench worker",
    "langgraph_peer": "langgraph",
}
# Each run's own engine and worker processes (CPU groups); the other processes are shared or idle.
ROLES = {
    "bench worker": {"engine": "bench engine", "worker": "bench worker"},
    "runtime": {"engine": "engine", "worker": "runtime"},
}
OP_NAMES = ("requests", "insert", "query", "update", "delete", "getmore", "command")
Key = tuple[str, str, int]  # execution, step, attempt


class StepClock:
    """Hears every task and every task result of a workspace as they are published (a core subscription beside
    the durable consumers, which it does not disturb) and times each step from them."""

    def __init__(self) -> None:
        self.tasks: dict[Key, float] = {}
        self.results: dict[Key, float] = {}

    async def attach(self, nc: Any, env: str, workspace_id: str) -> None:
        await nc.subscribe(f"{env}.task.{workspace_id}.>", cb=self._on_task)
        await nc.subscribe(f"{env}.cmd.{ENGINE}.{workspace_id}.RecordTaskResult", cb=self._on_result)

    async def _on_task(self, msg: Any) -> None:
        now = time.perf_counter()
        task = json.loads(msg.data)
        self.tasks.setdefault((task["execution_id"], task["step_id"], task["attempt"]), now)

    async def _on_result(self, msg: Any) -> None:
        now = time.perf_counter()
        result = json.loads(msg.data)["payload"]
        self.results.setdefault((result["execution_id"], result["step_id"], result["attempt"]), now)

    def clear(self) -> None:
        self.tasks.clear()
        self.results.clear()

    def steps(self) -> tuple[list[float], list[float], list[float]]:
        """Per step followed by another: its cycle (task -> next task), the worker's part (task -> result) and the
        engine's (result -> next task), in seconds."""
        cycle, worker, engine = [], [], []
        for (execution_id, step_id, attempt), published in self.tasks.items():
            previous = PREVIOUS_STEP.get(step_id)
            if previous is None or attempt != 1:
                continue
            before = self.tasks.get((execution_id, previous, 1))
            answered = self.results.get((execution_id, previous, 1))
            if before is None or answered is None:
                continue
            cycle.append(published - before)
            worker.append(answered - before)
            engine.append(published - answered)
        return cycle, worker, engine


@dataclass
class Run:
    """One measured run of ours: throughput, the step timings, and what the machine did for it."""

    mode: str
    inflight: int
    executions_s: float
    steps: int
    errors: int
    cycle: list[float]
    worker: list[float]
    engine: list[float]
    cpu: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)


@dataclass
class PeerRun:
    durability: str
    inflight: int
    executions_s: float
    errors: int
    cpu: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)


@dataclass
class Side:
    """One environment's driver and step clock."""

    mode: str
    driver: Driver
    clock: StepClock
    subjects: Subjects


async def run_ours(side: Side, meter: Meter, size: int, inflight: int) -> Run:
    js = side.driver.runtime.bus.js
    await quiesce(js, side.subjects, (side.subjects.commands_stream, side.subjects.events_stream))
    side.clock.clear()
    (elapsed, errors), cpu, ops = await meter.measured(lambda: side.driver.drive(WORKFLOW_ID, size, inflight))
    cycle, worker, engine = side.clock.steps()
    steps = sum(1 for key in side.clock.tasks if key[2] == 1)
    return Run(side.mode, inflight, (size - errors) / elapsed, steps, errors, cycle, worker, engine, cpu, ops)


# LangGraph --------------------------------------------------------------------------------------------------------


class Peer:
    """bench/langgraph_peer.py in .venv-bench: one request line per run, one answer line back."""

    def __init__(self, python: Path, mongodb_url: str, db_name: str, log: Path) -> None:
        script = Path(__file__).with_name("langgraph_peer.py")
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(python), str(script), "--mongodb", mongodb_url, "--db", db_name],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        if json.loads(self._line(120)).get("ready") is not True:
            raise RuntimeError("the LangGraph peer did not start")

    def _line(self, timeout_s: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line:
            raise RuntimeError("the LangGraph peer stopped answering (see its log)")
        return line

    async def run(self, meter: Meter, size: int, inflight: int, durability: str) -> PeerRun:
        assert self.proc.stdin is not None
        stdin = self.proc.stdin

        async def work() -> dict[str, Any]:
            stdin.write(json.dumps({"size": size, "inflight": inflight, "durability": durability}).encode() + b"\n")
            stdin.flush()
            answer: dict[str, Any] = json.loads(await asyncio.to_thread(self._line, 600))
            return answer

        answer, cpu, ops = await meter.measured(work)
        errors = int(answer["errors"])
        return PeerRun(durability, inflight, (size - errors) / float(answer["elapsed"]), errors, cpu, ops)

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        devstack.stop_process(self.proc)


# End to end through the gateway -----------------------------------------------------------------------------------


@dataclass
class Trip:
    """One execution through the gateway, in seconds from the POST: its answer, each step's task and result
    published, and ExecutionCompleted heard."""

    answered: float
    tasks: list[float]
    results: list[float]
    completed: float

    def parts(self) -> dict[str, float]:
        """Where the time went: the POST's answer; the engine (start to the first task, each result to the next
        task, the last result to completion); the agent runtime (each task to its result)."""
        engine = self.tasks[0] + sum(t - r for t, r in zip(self.tasks[1:], self.results, strict=False))
        return {
            "POST answered": self.answered,
            "engine": engine + self.completed - self.results[-1],
            "runtime": sum(r - t for t, r in zip(self.tasks, self.results, strict=True)),
            "total": self.completed,
        }


async def end_to_end(gateway_url: str, api_key: str, side: Side, workspace_id: str, count: int) -> list[Trip]:
    """``count`` executions one after another (after three unmeasured), timed by the step clock."""
    completed: dict[str, float] = {}
    arrived = asyncio.Event()

    async def on_completed(msg: Any) -> None:
        completed[msg.subject.split(".")[-2]] = time.perf_counter()
        arrived.set()

    nc = side.driver.runtime.bus.nc
    sub = await nc.subscribe(f"{side.subjects.env}.evt.execution.{workspace_id}.*.ExecutionCompleted", cb=on_completed)
    headers = {"Authorization": f"Bearer {api_key}"}
    trips: list[Trip] = []
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=30) as client:
        created = await client.post("/api/v1/workflows", json={"spec": SPEC.model_dump(mode="json")})
        created.raise_for_status()
        workflow_id = created.json()["resource_ids"]["workflow_id"]
        for i in range(count + 3):
            started = time.perf_counter()
            resp = await client.post(f"/api/v1/workflows/{workflow_id}/executions", json={"input": {"n": i}})
            answered = time.perf_counter() - started
            resp.raise_for_status()
            execution_id = resp.json()["resource_ids"]["execution_id"]
            deadline = started + 30
            while execution_id not in completed and time.perf_counter() < deadline:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), max(0.01, deadline - time.perf_counter()))
                except TimeoutError:
                    break
            if execution_id not in completed or i < 3:
                continue
            keys = [(execution_id, step, 1) for step in ("a", "b", "c")]
            if all(k in side.clock.tasks and k in side.clock.results for k in keys):
                trips.append(
                    Trip(
                        answered,
                        [side.clock.tasks[k] - started for k in keys],
                        [side.clock.results[k] - started for k in keys],
                        completed[execution_id] - started,
                    )
                )
    await sub.unsubscribe()
    return trips


# Set-up -----------------------------------------------------------------------------------------------------------


async def open_side(mode: str, env: str, nats_url: str, mongodb_url: str, workspace_id: str) -> Side:
    settings = ServiceSettings(
        service_name=f"bench-driver-{mode}", platform_env=env, nats_url=nats_url, mongodb_url=mongodb_url
    )
    runtime = Runtime(settings)
    await runtime.open()
    driver = Driver(runtime, workspace_id, play_worker=False)
    await driver.start()
    clock = StepClock()
    await clock.attach(runtime.bus.nc, env, workspace_id)
    create = CreateWorkflow(workflow_id=WORKFLOW_ID, spec=SPEC)
    envelope = envelope_for(create, workspace_id=workspace_id, command_id=uuid4().hex, actor=ACTOR)
    await publish_command(runtime.bus, ENGINE, envelope)
    return Side(mode, driver, clock, runtime.bus.subjects)


async def register_agents(side: Side, mongo: AsyncMongoClient[Document], workspace_id: str) -> None:
    """Agents of the steps' role, with the largest concurrency limit, on the local provider; waits until the
    orchestrator's read model (what the runtime routes from) has them."""
    for i in range(AGENTS):
        spec = AgentSpec(
            name=f"Bench agent {i}",
            role=ROLE,
            concurrency_limit=AGENT_LIMIT,
            model=ModelSetting(provider="local", max_output_tokens=64),
        )
        command = RegisterAgent(agent_id=f"agt_bench{i}", spec=spec)
        envelope = envelope_for(command, workspace_id=workspace_id, command_id=uuid4().hex, actor=ACTOR)
        await publish_command(side.driver.runtime.bus, "orchestrator", envelope)
    agents = mongo[side.subjects.database("orchestrator")]["agents"]
    for _ in range(300):
        if await agents.count_documents({"workspace_id": workspace_id}) >= AGENTS:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the agents did not reach the orchestrator's read model")


@dataclass
class Results:
    runs: list[Run]
    peers: list[PeerRun]
    e2e: list[Trip]


async def measure(
    args: argparse.Namespace,
    mongodb_url: str,
    nats_url: str,
    envs: dict[str, str],
    workspace_id: str,
    gateway_url: str,
    api_key: str,
    regroup: dict[int, str],
    peer: Peer | None,
) -> Results:
    mongo: AsyncMongoClient[Document] = connect_mongo(mongodb_url, 10_000)
    cpu = CpuMeter(lambda module: CPU_GROUPS.get(module, module))
    for pid, group in regroup.items():
        cpu.regroup(pid, group)
    meter = Meter(Probe(mongo, cpu))
    bench_side = await open_side("bench worker", envs["bench worker"], nats_url, mongodb_url, WORKSPACE)
    real_side = await open_side("runtime", envs["runtime"], nats_url, mongodb_url, workspace_id)
    sides = (bench_side, real_side)
    runs: list[Run] = []
    peers: list[PeerRun] = []
    try:
        await register_agents(real_side, mongo, workspace_id)
        await asyncio.sleep(1.0)  # the workflow definitions are stored
        for side in sides:
            await run_ours(side, meter, args.warmup, 10)
        if peer is not None:
            await peer.run(meter, args.warmup, 10, "async")
        for side in sides:
            await quiesce(side.driver.runtime.bus.js, side.subjects)
        await meter.calibrate(IDLE_S)
        print(f"  warmed up ({args.warmup} executions each); idle machine measured for {IDLE_S:.0f} s", flush=True)
        for rep in range(args.reps):
            for inflight in args.inflight:
                for side in sides:
                    runs.append(run := await run_ours(side, meter, args.size, inflight))
                    print(
                        f"  rep {rep + 1} in-flight {inflight} {side.mode}: {run.executions_s:.1f} exec/s, "
                        f"step p50 {pct(run.cycle, 0.5) * 1000:.1f} ms",
                        flush=True,
                    )
                for durability in args.durability if peer is not None else []:
                    peers.append(theirs := await peer.run(meter, args.size, inflight, durability))
                    print(
                        f"  rep {rep + 1} in-flight {inflight} langgraph ({durability}): "
                        f"{theirs.executions_s:.1f} exec/s",
                        flush=True,
                    )
        await quiesce(real_side.driver.runtime.bus.js, real_side.subjects)
        e2e: list[Trip] = []
        for _ in range(args.reps):
            e2e += await end_to_end(gateway_url, api_key, real_side, workspace_id, args.e2e)
        print(f"  end to end: {len(e2e)} executions", flush=True)
    finally:
        for side in sides:
            await side.driver.runtime.stop()
        await mongo.close()
    return Results(runs, peers, e2e)


# Report -----------------------------------------------------------------------------------------------------------


def report(args: argparse.Namespace, results: Results) -> None:
    runs, peers = results.runs, results.peers
    print()
    print("1. The 3-step workflow: the bench's instant worker vs the real agent runtime (local provider)")
    print("   step = a task published -> the next step's task published (worker's part: task -> result;")
    print("   engine's part: result -> next task); ranges are over the repetitions")
    table = [["in-flight", "worker", "exec/s", "step p50 ms", "step p99 ms", "worker p50", "engine p50", "err"]]
    for inflight in args.inflight:
        for mode in ("bench worker", "runtime"):
            mine = [r for r in runs if r.inflight == inflight and r.mode == mode]
            table.append(
                [
                    str(inflight),
                    mode,
                    spread([r.executions_s for r in mine]),
                    spread([pct(r.cycle, 0.5) * 1000 for r in mine]),
                    spread([pct(r.cycle, 0.99) * 1000 for r in mine]),
                    spread([pct(r.worker, 0.5) * 1000 for r in mine]),
                    spread([pct(r.engine, 0.5) * 1000 for r in mine]),
                    str(sum(r.errors for r in mine)),
                ]
            )
    print(aligned(table))
    print()
    print("   The runtime's cost per step (runtime / bench worker, per repetition):")
    for inflight in args.inflight:
        pairs = list(
            zip(
                [r for r in runs if r.inflight == inflight and r.mode == "bench worker"],
                [r for r in runs if r.inflight == inflight and r.mode == "runtime"],
                strict=True,
            )
        )
        p50 = [pct(rt.cycle, 0.5) / pct(bw.cycle, 0.5) for bw, rt in pairs]
        p99 = [pct(rt.cycle, 0.99) / pct(bw.cycle, 0.99) for bw, rt in pairs]
        rate = [rt.executions_s / bw.executions_s for bw, rt in pairs]
        print(f"   in-flight {inflight}: step p50 x{spread(p50, 2)}, p99 x{spread(p99, 2)}, exec/s x{spread(rate, 2)}")
    print()
    print("   Per step: CPU ms of each process (engine and worker: the run's own), and MongoDB operations as the")
    print("   server counted them (round trips = requests); what the idle machine does in as long is taken out")
    print("   (nats-server also serves other users of the machine's NATS)")
    own = {g for roles in ROLES.values() for g in roles.values()}
    shared = sorted({g for r in runs for g, spent in r.cpu.items() if spent > 0.01} - own)
    op_names = [
        n for n in ("requests", "insert", "query", "update", "delete", "getmore", "command") if n in runs[0].ops
    ]
    table = [["in-flight", "worker", "engine", "worker", *shared, *(f"db {n}" for n in op_names)]]
    for inflight in args.inflight:
        for mode, roles in ROLES.items():
            mine = [r for r in runs if r.inflight == inflight and r.mode == mode]
            steps = sum(r.steps for r in mine) or 1
            cells = [str(inflight), mode]
            cells += [f"{1000 * sum(r.cpu.get(g, 0.0) for r in mine) / steps:.2f}" for g in (*roles.values(), *shared)]
            cells += [f"{sum(r.ops.get(n, 0) for r in mine) / steps:.1f}" for n in op_names]
            table.append(cells)
    print(aligned(table))
    print()
    print("2. End to end through the gateway, 1 in flight: POST .../executions -> ExecutionCompleted")
    totals = [trip.completed for trip in results.e2e]
    print(f"   {len(totals)} executions: p50 {ms(totals, 0.5)} ms, p99 {ms(totals, 0.99)} ms")
    if results.e2e:
        parts = [trip.parts() for trip in results.e2e]
        print("   where it goes (p50 of each part, ms): ", end="")
        print(", ".join(f"{name} {ms([p[name] for p in parts], 0.5)}" for name in parts[0] if name != "total"))
        print("   (engine: start to the first task, each result to the next task, the last to completion;")
        print("   runtime: each task to its result, the three steps together)")
    print()
    print("3. LangGraph (MongoDBSaver on the same server, same 3 instant nodes) beside us")
    if not peers:
        print(f"   skipped: no {args.peer_python} (make bench creates it from bench/requirements.txt)")
    else:
        table = [["in-flight", "langgraph", "exec/s", "err", "bench worker x", "runtime x"]]
        for inflight in args.inflight:
            ours = {
                mode: [r.executions_s for r in runs if r.inflight == inflight and r.mode == mode]
                for mode in ("bench worker", "runtime")
            }
            for durability in args.durability:
                theirs = [p for p in peers if p.inflight == inflight and p.durability == durability]
                rates = [p.executions_s for p in theirs]
                table.append(
                    [
                        str(inflight),
                        durability,
                        spread(rates),
                        str(sum(p.errors for p in theirs)),
                        spread([o / t for o, t in zip(ours["bench worker"], rates, strict=True)], 2),
                        spread([o / t for o, t in zip(ours["runtime"], rates, strict=True)], 2),
                    ]
                )
        print(aligned(table))
        op_names = [n for n in ("requests", "insert", "query", "update") if n in peers[0].ops]
        per = {n: sum(p.ops.get(n, 0) for p in peers) / (args.size * len(peers)) for n in op_names}
        print("   LangGraph per execution (all runs): " + ", ".join(f"db {n} {v:.1f}" for n, v in per.items()))
    print()
    print("Targets: the runtime's step p50 at most 1.2x the bench worker's; end-to-end p50 under 100 ms;")
    print("         the runtime's executions/s at least 3x LangGraph's at each in-flight level.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--size", type=int, help="executions per measured run (default 300; --quick 40)")
    parser.add_argument("--inflight", default="10,100", help="in-flight levels (default 10,100)")
    parser.add_argument("--reps", type=int, help="repetitions of every configuration (default 2; --quick 1)")
    parser.add_argument("--e2e", type=int, help="end-to-end executions per repetition (default 50; --quick 10)")
    parser.add_argument("--durability", default="async,sync", help="LangGraph durability modes (default async,sync)")
    parser.add_argument(
        "--peer-python", type=Path, default=REPO / ".venv-bench" / "bin" / "python", help="the peer's interpreter"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs and print where they are")
    args = parser.parse_args()
    args.size = args.size or (40 if args.quick else 300)
    args.reps = args.reps or (1 if args.quick else 2)
    args.e2e = args.e2e or (10 if args.quick else 50)
    args.warmup = 20
    args.inflight = [int(s) for s in args.inflight.split(",")]
    args.durability = [s for s in args.durability.split(",") if s]
    return args


@contextmanager
def peer_process(python: Path, mongodb_url: str, db_name: str, logs: Path) -> Iterator[Peer | None]:
    if not python.exists():
        yield None
        return
    peer = Peer(python, mongodb_url, db_name, logs / "langgraph.log")
    try:
        yield peer
    finally:
        peer.stop()


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    envs = {"bench worker": "bench" + uuid4().hex[:8], "runtime": "bench" + uuid4().hex[:8]}
    started = time.perf_counter()
    try:
        with (
            devstack.mongodb(workdir / "mongodb", logs) as mongodb_url,
            devstack.nats(workdir / "nats", logs) as nats_url,
        ):
            print(f"Agent runtime benchmark (MongoDB {mongodb_url}; NATS {nats_url}; environments {envs})", flush=True)
            common = {**os.environ, **SERVICE_ENV, "MONGODB_URL": mongodb_url, "NATS_URL": nats_url}
            bench_env = {**common, "PLATFORM_ENV": envs["bench worker"]}
            real_env = {**common, "PLATFORM_ENV": envs["runtime"]}
            worker_argv = [sys.executable, str(Path(__file__).with_name("common.py")), "worker"]
            worker_argv += ["--env", envs["bench worker"], "--nats", nats_url, "--mongodb", mongodb_url]
            os.environ.setdefault("DEVSTACK_PORT_BASE", str(free_port_base()))
            try:
                with (
                    service_process("workflow_engine", bench_env, logs, name="bench-engine") as bench_engine,
                    service_process("bench worker", bench_env, logs, name="bench-worker", argv=worker_argv),
                    devstack.services(real_env, logs) as stack,
                    peer_process(args.peer_python, mongodb_url, f"{envs['runtime']}_langgraph", logs) as peer,
                ):
                    urls = stack.urls
                    workspace = devstack.create_workspace(real_env, "bench")
                    print(f"  services up in {time.perf_counter() - started:.0f}s", flush=True)
                    results = asyncio.run(
                        measure(
                            args,
                            mongodb_url,
                            nats_url,
                            envs,
                            workspace["workspace_id"],
                            urls["gateway"],
                            workspace["api_key"],
                            {bench_engine.pid: "bench engine"},
                            peer,
                        )
                    )
                print(f"Measured in {time.perf_counter() - started:.0f}s on {os.cpu_count()} cores.")
                report(args, results)
            finally:
                for env in envs.values():
                    try:  # streams first, then databases (those of a SecantusDB started here go with it anyway)
                        asyncio.run(devstack.drop_environment(env, mongodb_url=mongodb_url, nats_url=nats_url))
                    except Exception as exc:  # noqa: BLE001 - the figures are printed; say what was left behind
                        print(f"could not remove environment {env} entirely: {exc!r}")
    finally:
        if args.keep_logs:
            shutil.rmtree(workdir / "mongodb", ignore_errors=True)
            print(f"Logs kept in {logs}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
