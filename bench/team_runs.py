"""Team runs through the gateway, and a plain 3-step workflow beside them, in the same run on the same processes.

    .venv/bin/python bench/team_runs.py [--quick] [--runs 100] [--inflight 10] [--reps 2]

One SecantusDB (started here, or MONGODB_URL) and one NATS (NATS_URL, default 127.0.0.1:4222, or one started
here) serve a fresh environment running every service and the real agent runtime (``python -m
orchestrator.runtime``, the local provider), as ``make up`` runs them. A hand-made team of three agents (a lead
qualifier, a proposal writer, a follow-up agent; concurrency limit AGENT_LIMIT each, so ``--inflight`` runs are
never held back by an agent's limit) is run on an objective that names all three roles, so that the local lead's
plan has one step per member. The plain workflow has three agent steps routed to the same three agents by id.

Each repetition sends, through the gateway and ``--inflight`` at a time, ``--runs / --reps`` plain executions
(POST /api/v1/workflows/{id}/executions -> ExecutionCompleted) and as many team runs (POST /api/v1/teams/{id}/runs
-> TeamRunEnded), one batch after the other, in the order plain, team; team, plain; ... (SecantusDB slows down as
it fills, so that neither kind always runs on the fuller database); the ratios pair the batches of a repetition.
A passive core subscription hears every task (TASKS stream), every task result (the engine's RecordTaskResult
command) and every execution and team-run event as they are published, and times from them:

- a handoff, between two consecutive steps of one execution: the member's result -> the next member's task
  (what the target is about), split into the engine's StepSucceeded of the step -> the next task, and beside it the
  step cycle (a task -> the next task) and the member's own part (task -> result), for the team run's work
  execution and for the plain workflow alike;
- a team run's fixed cost beyond its work steps: its total less the span of the work steps (first member's task ->
  last member's result), split into the lead's plan and summary executions and the switches between phases (an
  execution's ExecutionCompleted -> the next execution's ExecutionStarted, done by the orchestrator following the
  engine's events), beside the same for the plain execution (POST -> first task, last result -> completed);
- CPU per agent step by process (less what the idle machine does in as long).

Last, a few of each are run one at a time, so that the handoffs' ratio without contention is printed too.

Nothing is asserted; the figures are printed. The machine is shared: prefer the medians and the ratios, each
measured in the same repetition. The environment's streams and databases are deleted at the end.
"""

import argparse
import asyncio
import itertools
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from common import (
    ENGINE,
    CpuMeter,
    Document,
    Meter,
    Probe,
    aligned,
    free_port_base,
    ms,
    pct,
    quiesce,
    spread,
)
from pymongo import AsyncMongoClient

from contracts import Subjects
from servicekit import devstack
from servicekit.mongo import connect_mongo
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings

AGENT_LIMIT = 20  # per agent; above the in-flight level, so no task waits for an agent's slot
OBJECTIVE = "Qualify the new leads, write proposals and follow up"
MEMBERS = (  # name, role, lead: the local provider answers by role (a score, a draft, a report)
    ("Lead qualifier", "lead qualifier", True),
    ("Proposal writer", "proposal writer", False),
    ("Follow-up agent", "follow-up", False),
)
PLAIN_STEPS = ("a", "b", "c")
SERVICE_ENV = {"LOG_LEVEL": "WARNING", "RELAY_POLL_INTERVAL_S": "0.5"}
CPU_GROUPS = {"workflow_engine": "engine", "orchestrator.runtime": "runtime"}
IDLE_S = 3.0
TIMEOUT_S = 120.0
ENDS = ("ExecutionCompleted", "ExecutionFailed", "ExecutionCancelled")
Key = tuple[str, str]  # execution, step (first attempts only)
WORK_STEPS = "work steps (first task -> last result)"
PLAIN_STEPS_PART = "steps (first task -> last result)"


class Timeline:
    """When each task, task result and execution or team-run event of a workspace was first published, heard by
    core subscriptions beside the durable consumers (which they do not disturb); and who is waiting for an end."""

    def __init__(self) -> None:
        self.tasks: dict[Key, float] = {}
        self.results: dict[Key, float] = {}
        self.succeeded: dict[Key, float] = {}
        self.events: dict[tuple[str, str], float] = {}  # (execution, event type)
        self.retried: set[str] = set()  # executions with a second attempt of a step: left out of the step figures
        self.ended: dict[str, str] = {}  # execution or run -> how it ended
        self._waiting: dict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def attach(self, nc: Any, subjects: Subjects, workspace_id: str) -> None:
        await nc.subscribe(f"{subjects.env}.task.{workspace_id}.>", cb=self._on_task)
        await nc.subscribe(subjects.command(ENGINE, workspace_id, "RecordTaskResult"), cb=self._on_result)
        await nc.subscribe(subjects.event("execution", workspace_id, "*", "*"), cb=self._on_execution)
        await nc.subscribe(subjects.event("team_run", workspace_id, "*", "TeamRunEnded"), cb=self._on_run_ended)

    async def _on_task(self, msg: Any) -> None:
        now = time.perf_counter()
        task = json.loads(msg.data)
        if task["attempt"] != 1:
            self.retried.add(task["execution_id"])
            return
        self.tasks.setdefault((task["execution_id"], task["step_id"]), now)

    async def _on_result(self, msg: Any) -> None:
        now = time.perf_counter()
        result = json.loads(msg.data)["payload"]
        if result["attempt"] == 1:
            self.results.setdefault((result["execution_id"], result["step_id"]), now)

    async def _on_execution(self, msg: Any) -> None:
        now = time.perf_counter()
        execution_id, event_type = msg.subject.split(".")[-2:]
        self.events.setdefault((execution_id, event_type), now)
        if event_type == "StepSucceeded":
            self.succeeded.setdefault((execution_id, json.loads(msg.data)["data"]["step_id"]), now)
        elif event_type in ENDS:
            self._end(execution_id, event_type, now)

    async def _on_run_ended(self, msg: Any) -> None:
        now = time.perf_counter()
        run_id = msg.subject.split(".")[-2]
        self._end(run_id, str(json.loads(msg.data)["data"]["status"]), now)

    def _end(self, ident: str, how: str, now: float) -> None:
        self.events.setdefault((ident, "end"), now)
        self.ended.setdefault(ident, how)
        self._waiting[ident].set()

    async def wait_end(self, ident: str, timeout_s: float) -> str | None:
        """How ``ident`` ended (None: not within ``timeout_s``)."""
        try:
            await asyncio.wait_for(self._waiting[ident].wait(), timeout_s)
        except TimeoutError:
            return None
        finally:
            self._waiting.pop(ident, None)
        return self.ended[ident]

    def steps_of(self, execution_id: str) -> list[str]:
        """The execution's steps in the order their tasks were published."""
        mine = [(t, step) for (ex, step), t in self.tasks.items() if ex == execution_id]
        return [step for _, step in sorted(mine)]


@dataclass
class Handoffs:
    """Between consecutive steps of executions, in seconds."""

    result_to_task: list[float] = field(default_factory=list)
    succeeded_to_task: list[float] = field(default_factory=list)
    cycle: list[float] = field(default_factory=list)
    member: list[float] = field(default_factory=list)

    def add(self, timeline: Timeline, execution_id: str, steps: list[str]) -> int:
        """The handoffs of one execution's chain of ``steps``; how many were timed."""
        if execution_id in timeline.retried:
            return 0
        timed = 0
        for before, after in itertools.pairwise(steps):
            task, result = timeline.tasks.get((execution_id, before)), timeline.results.get((execution_id, before))
            done, following = timeline.succeeded.get((execution_id, before)), timeline.tasks.get((execution_id, after))
            if task is None or result is None or done is None or following is None:
                continue
            self.result_to_task.append(following - result)
            self.succeeded_to_task.append(following - done)
            self.cycle.append(following - task)
            self.member.append(result - task)
            timed += 1
        return timed


@dataclass
class Batch:
    """One batch of plain executions or team runs, ``inflight`` at a time."""

    kind: str
    count: int
    elapsed: float
    errors: int
    latencies: list[float]
    agent_steps: int
    handoffs: Handoffs
    parts: dict[str, list[float]]  # the fixed cost's parts, per execution or run
    cpu: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)


Started = tuple[str, float]  # the execution or run id, and when its POST was sent


async def drive(
    count: int, inflight: int, timeline: Timeline, post: Callable[[int], Awaitable[str]]
) -> tuple[list[Started], list[float], int, float]:
    """``count`` POSTs, ``inflight`` at a time, each waited for to its end: what started (and when), the latencies
    of what succeeded, the number that did not, and the seconds taken."""
    gate = asyncio.Semaphore(inflight)
    started: list[Started] = []
    latencies: list[float] = []
    errors = 0

    async def one(i: int) -> None:
        nonlocal errors
        async with gate:
            sent = time.perf_counter()
            try:
                ident = await post(i)
            except httpx.HTTPError:
                errors += 1
                return
            how = await timeline.wait_end(ident, TIMEOUT_S)
            if how not in ("completed", "ExecutionCompleted"):
                errors += 1
                return
            started.append((ident, sent))
            latencies.append(timeline.events[(ident, "end")] - sent)

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return started, latencies, errors, time.perf_counter() - began


def team_run_parts(timeline: Timeline, run_id: str, sent: float, handoffs: Handoffs) -> dict[str, float] | None:
    """Where a team run's time went (its work steps' handoffs added to ``handoffs``); None if anything is missing."""
    plan, work, summary = (f"tr-{run_id}-{phase}" for phase in ("plan", "work", "sum"))
    steps = timeline.steps_of(work)
    if not steps or any(ex in timeline.retried for ex in (plan, work, summary)):
        return None
    first, last = (work, steps[0]), (work, steps[-1])
    t = timeline.tasks
    r = timeline.results
    e = timeline.events
    try:
        parts = {
            "POST -> lead's plan task": t[(plan, "plan")] - sent,
            "lead's plan (task -> result)": r[(plan, "plan")] - t[(plan, "plan")],
            "plan result -> plan completed": e[(plan, "ExecutionCompleted")] - r[(plan, "plan")],
            "plan completed -> work started": e[(work, "ExecutionStarted")] - e[(plan, "ExecutionCompleted")],
            "work started -> first member's task": t[first] - e[(work, "ExecutionStarted")],
            "switch plan -> work (plan result -> first task)": t[first] - r[(plan, "plan")],
            "last member's result -> work completed": e[(work, "ExecutionCompleted")] - r[last],
            "work completed -> summary started": e[(summary, "ExecutionStarted")] - e[(work, "ExecutionCompleted")],
            "summary started -> summary task": t[(summary, "summary")] - e[(summary, "ExecutionStarted")],
            "switch work -> summary (last result -> summary task)": t[(summary, "summary")] - r[last],
            "lead's summary (task -> result)": r[(summary, "summary")] - t[(summary, "summary")],
            "summary result -> summary completed": e[(summary, "ExecutionCompleted")] - r[(summary, "summary")],
            "summary completed -> TeamRunEnded": e[(run_id, "end")] - e[(summary, "ExecutionCompleted")],
            "work steps (first task -> last result)": r[last] - t[first],
            "total (POST -> TeamRunEnded)": e[(run_id, "end")] - sent,
        }
    except KeyError:
        return None
    parts["fixed cost (total - work steps)"] = parts["total (POST -> TeamRunEnded)"] - parts[WORK_STEPS]
    handoffs.add(timeline, work, steps)
    return parts


def plain_parts(timeline: Timeline, execution_id: str, sent: float, handoffs: Handoffs) -> dict[str, float] | None:
    t, r, e = timeline.tasks, timeline.results, timeline.events
    first, last = (execution_id, PLAIN_STEPS[0]), (execution_id, PLAIN_STEPS[-1])
    if execution_id in timeline.retried:
        return None
    try:
        parts = {
            "POST -> first task": t[first] - sent,
            "last result -> completed": e[(execution_id, "end")] - r[last],
            PLAIN_STEPS_PART: r[last] - t[first],
            "total (POST -> ExecutionCompleted)": e[(execution_id, "end")] - sent,
        }
    except KeyError:
        return None
    parts["fixed cost (total - steps)"] = parts["total (POST -> ExecutionCompleted)"] - parts[PLAIN_STEPS_PART]
    handoffs.add(timeline, execution_id, list(PLAIN_STEPS))
    return parts


class Bench:
    """The gateway client, the timeline and the meter of one environment."""

    def __init__(self, client: httpx.AsyncClient, timeline: Timeline, meter: Meter, runtime: Runtime) -> None:
        self.client = client
        self.timeline = timeline
        self.meter = meter
        self.runtime = runtime
        self.team_id = ""
        self.workflow_id = ""

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = await self.client.post(path, json=body)
        resp.raise_for_status()
        answer: dict[str, Any] = resp.json()
        return answer

    async def set_up(self) -> list[str]:
        """The three agents, their team and the plain workflow over them; waits until every member is available."""
        agent_ids = []
        for name, role, _ in MEMBERS:
            spec = {"name": name, "role": role, "concurrency_limit": AGENT_LIMIT, "model": {"provider": "local"}}
            agent_ids.append((await self.post("/api/v1/agents", spec))["resource_ids"]["agent_id"])
        members = [
            {"agent_id": agent_id, "role": role, "lead": lead}
            for agent_id, (_, role, lead) in zip(agent_ids, MEMBERS, strict=True)
        ]
        team = await self.post("/api/v1/teams", {"spec": {"name": "Bench sales", "members": members}})
        self.team_id = team["resource_ids"]["team_id"]
        steps = [
            {"id": step, "kind": "agent", "agent_id": agent_id, **({"next": following} if following else {})}
            for step, agent_id, following in zip(PLAIN_STEPS, agent_ids, [*PLAIN_STEPS[1:], None], strict=True)
        ]
        spec = {"name": "Bench plain", "start": PLAIN_STEPS[0], "steps": steps}
        self.workflow_id = (await self.post("/api/v1/workflows", {"spec": spec}))["resource_ids"]["workflow_id"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            resp = await self.client.get(f"/api/v1/teams/{self.team_id}/status")
            if resp.status_code == 200 and all(m["status"] == "available" for m in resp.json()["members"]):
                return agent_ids
            await asyncio.sleep(0.2)
        raise RuntimeError("the team's members did not become available")

    async def start_run(self, i: int) -> str:
        answer = await self.post(f"/api/v1/teams/{self.team_id}/runs", {"objective": OBJECTIVE, "input": {"n": i}})
        return str(answer["resource_ids"].get("run_id") or f"run_{answer['command_id'][:24]}")

    async def start_execution(self, i: int) -> str:
        answer = await self.post(f"/api/v1/workflows/{self.workflow_id}/executions", {"input": {"n": i}})
        return str(answer["resource_ids"]["execution_id"])

    async def batch(self, kind: str, count: int, inflight: int) -> Batch:
        subjects = self.runtime.bus.subjects
        streams = (subjects.commands_stream, subjects.events_stream, subjects.tasks_stream)
        await quiesce(self.runtime.bus.js, subjects, streams)
        post = self.start_run if kind == "team run" else self.start_execution
        (started, latencies, errors, elapsed), cpu, ops = await self.meter.measured(
            lambda: drive(count, inflight, self.timeline, post)
        )
        handoffs = Handoffs()
        parts: dict[str, list[float]] = defaultdict(list)
        for ident, sent in started:
            timed = (team_run_parts if kind == "team run" else plain_parts)(self.timeline, ident, sent, handoffs)
            for name, seconds in (timed or {}).items():
                parts[name].append(seconds)
        agent_steps = (len(MEMBERS) + 2 if kind == "team run" else len(PLAIN_STEPS)) * len(started)
        return Batch(kind, count, elapsed, errors, latencies, agent_steps, handoffs, dict(parts), cpu, ops)


async def measure(
    args: argparse.Namespace, env: str, nats_url: str, mongodb_url: str, gateway_url: str, service_env: dict[str, str]
) -> list[Batch]:
    workspace = devstack.create_workspace(service_env, "bench")
    settings = ServiceSettings(
        service_name="bench-team-runs", platform_env=env, nats_url=nats_url, mongodb_url=mongodb_url
    )
    runtime = Runtime(settings)
    await runtime.open()
    await runtime.start()
    timeline = Timeline()
    await timeline.attach(runtime.bus.nc, runtime.bus.subjects, workspace["workspace_id"])
    mongo: AsyncMongoClient[Document] = connect_mongo(mongodb_url, 10_000)
    meter = Meter(Probe(mongo, CpuMeter(lambda module: CPU_GROUPS.get(module, module))))
    headers = {"Authorization": f"Bearer {workspace['api_key']}"}
    batches: list[Batch] = []
    try:
        async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=60) as client:
            bench = Bench(client, timeline, meter, runtime)
            await bench.set_up()
            await bench.batch("plain", args.warmup * 2, args.inflight)
            await bench.batch("team run", args.warmup, args.inflight)
            await quiesce(runtime.bus.js, runtime.bus.subjects)
            await meter.calibrate(IDLE_S)
            print(f"  warmed up; idle machine measured for {IDLE_S:.0f} s", flush=True)
            per_rep = max(1, args.runs // args.reps)
            for rep in range(args.reps):  # plain, team; team, plain; ...: both kinds share the database's slowing
                for kind in ("plain", "team run")[:: 1 if rep % 2 == 0 else -1]:
                    batches.append(done := await bench.batch(kind, per_rep, args.inflight))
                    print(
                        f"  rep {rep + 1} {kind}: {(done.count - done.errors) / done.elapsed:.1f}/s, "
                        f"p50 {ms(done.latencies, 0.5)} ms, handoff p50 {ms(done.handoffs.result_to_task, 0.5)} ms, "
                        f"errors {done.errors}",
                        flush=True,
                    )
            for kind in ("plain", "team run"):  # the same with nothing else in flight: what is not contention
                batches.append(await bench.batch(kind, args.solo, 1))
            print(f"  {args.solo} of each one at a time", flush=True)
    finally:
        await runtime.stop()
        await mongo.close()
    return batches


def report(args: argparse.Namespace, batches: list[Batch]) -> None:
    solo = batches[-2:]
    batches = batches[:-2]
    plain = [b for b in batches if b.kind == "plain"]
    team = [b for b in batches if b.kind == "team run"]
    print()
    print(f"1. Throughput through the gateway, {args.inflight} in flight (agents' concurrency limit {AGENT_LIMIT},")
    print("   local provider); latency: POST -> ExecutionCompleted / TeamRunEnded")
    table = [["kind", "count", "per s", "agent steps/s", "p50 ms", "p99 ms", "errors"]]
    for kind, mine in (("plain 3-step execution", plain), ("team run (3 members)", team)):
        latencies = [x for b in mine for x in b.latencies]
        table.append(
            [
                kind,
                str(sum(b.count for b in mine)),
                spread([(b.count - b.errors) / b.elapsed for b in mine]),
                spread([b.agent_steps / b.elapsed for b in mine]),
                ms(latencies, 0.5),
                ms(latencies, 0.99),
                str(sum(b.errors for b in mine)),
            ]
        )
    print(aligned(table))
    print("   (per s and agent steps/s: range over the repetitions; a team run has 5 agent steps: plan, 3 members,")
    print("   summary)")
    print()
    print("2. A handoff of a team run (work execution, member k -> member k+1) vs a step of the plain workflow")
    print("   (a -> b, b -> c), same agents, same processes; ratio = team / plain, the range over the repetitions")
    measures = (
        ("member's result -> next task", "result_to_task"),
        ("  of it: StepSucceeded -> next task", "succeeded_to_task"),
        ("step cycle: task -> next task", "cycle"),
        ("  of it: the member (task -> result)", "member"),
    )
    table = [["measure", "plain p50", "plain p99", "team p50", "team p99", "p50 ratio", "p99 ratio", "n plain/team"]]
    for name, attr in measures:
        ours: list[float] = [x for b in plain for x in getattr(b.handoffs, attr)]
        theirs: list[float] = [x for b in team for x in getattr(b.handoffs, attr)]
        ratios50 = [
            pct(getattr(t.handoffs, attr), 0.5) / pct(getattr(p.handoffs, attr), 0.5)
            for p, t in zip(plain, team, strict=True)
        ]
        ratios99 = [
            pct(getattr(t.handoffs, attr), 0.99) / pct(getattr(p.handoffs, attr), 0.99)
            for p, t in zip(plain, team, strict=True)
        ]
        table.append(
            [
                name,
                ms(ours, 0.5),
                ms(ours, 0.99),
                ms(theirs, 0.5),
                ms(theirs, 0.99),
                f"x{spread(ratios50, 2)}",
                f"x{spread(ratios99, 2)}",
                f"{len(ours)}/{len(theirs)}",
            ]
        )
    print(aligned(table))
    print("   (StepSucceeded is heard when the engine's relay publishes it, beside the executor's dispatch of the")
    print("   next task from the same commit, so that part can be near zero or negative)")
    alone = {b.kind: b.handoffs.result_to_task for b in solo}
    print(
        f"   1 in flight ({args.solo} of each): member's result -> next task p50 plain {ms(alone['plain'], 0.5)} ms, "
        f"team {ms(alone['team run'], 0.5)} ms, x{pct(alone['team run'], 0.5) / pct(alone['plain'], 0.5):.2f}"
    )
    print()
    print("3. The fixed cost of a team run beyond its work steps (ms; p50 and p99 over the runs), beside a plain")
    print("   execution's; the parts do not add up exactly (each is its own percentile); last column: the runs")
    print("   made one at a time")
    table = [["part", "p50 ms", "p99 ms", "1 in flight p50"]]
    for mine in (team, plain):
        names = list(mine[0].parts) if mine and mine[0].parts else []
        alone_parts = next(b.parts for b in solo if b.kind == mine[0].kind)
        for name in names:
            values = [x for b in mine for x in b.parts.get(name, [])]
            label = ("team run: " if mine is team else "plain: ") + name
            table.append([label, ms(values, 0.5), ms(values, 0.99), ms(alone_parts.get(name, []), 0.5)])
    print(aligned(table))
    plain_step = pct([x for b in plain for x in b.handoffs.cycle], 0.5)
    fixed = pct([x for b in team for x in b.parts.get("fixed cost (total - work steps)", [])], 0.5)
    print(f"   a team run's fixed cost p50 = {fixed / plain_step:.1f} plain step cycles (p50)")
    print()
    print("4. Per agent step: CPU ms by process, and MongoDB operations as the server counted them (round trips")
    print("   = requests); what the idle machine does in as long is taken out (nats-server also serves the")
    print("   machine's other users)")
    groups = sorted({g for b in batches for g, spent in b.cpu.items() if spent > 0.01})
    op_names = [n for n in ("requests", "insert", "query", "update", "command") if n in batches[0].ops]
    table = [["kind", *groups, *(f"db {n}" for n in op_names)]]
    for kind, mine in (("plain", plain), ("team run", team)):
        steps = sum(b.agent_steps for b in mine) or 1
        cells = [f"{1000 * sum(b.cpu.get(g, 0.0) for b in mine) / steps:.2f}" for g in groups]
        cells += [f"{sum(b.ops.get(n, 0) for b in mine) / steps:.1f}" for n in op_names]
        table.append([kind, *cells])
    print(aligned(table))
    print()
    print("Target: a handoff (member's result -> next member's task, p50) at most 1.5x a plain workflow step's.")
    print(f"Measured on {os.cpu_count()} cores shared with other users: figures are noisy; compare the ratios.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20 runs in 1 repetition, for a smoke test")
    parser.add_argument("--runs", type=int, help="team runs in all (as many plain executions; default 100)")
    parser.add_argument("--inflight", type=int, default=10, help="runs (or executions) in flight (default 10)")
    parser.add_argument("--reps", type=int, help="repetitions, each a plain and a team batch (default 2)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs and print where they are")
    args = parser.parse_args()
    args.runs = args.runs or (20 if args.quick else 100)
    args.reps = args.reps or (1 if args.quick else 2)
    args.warmup = 3 if args.quick else 5
    args.solo = 3 if args.quick else 10
    return args


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-team-runs-"))
    logs = workdir / "logs"
    logs.mkdir(parents=True)
    env = "bench" + uuid4().hex[:8]
    started = time.perf_counter()
    try:
        with (
            devstack.mongodb(workdir / "mongodb", logs) as mongodb_url,
            devstack.nats(workdir / "nats", logs) as nats_url,
        ):
            print(f"Team run benchmark (MongoDB {mongodb_url}; NATS {nats_url}; environment {env})", flush=True)
            service_env = {
                **os.environ,
                **SERVICE_ENV,
                "MONGODB_URL": mongodb_url,
                "NATS_URL": nats_url,
                "PLATFORM_ENV": env,
            }
            service_env.pop("OPENAI_API_KEY", None)  # the local provider
            os.environ.setdefault("DEVSTACK_PORT_BASE", str(free_port_base()))
            try:
                with devstack.services(service_env, logs) as stack:
                    print(f"  services up in {time.perf_counter() - started:.0f}s", flush=True)
                    batches = asyncio.run(measure(args, env, nats_url, mongodb_url, stack.urls["gateway"], service_env))
                print(f"Measured in {time.perf_counter() - started:.0f}s.")
                report(args, batches)
            finally:
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
