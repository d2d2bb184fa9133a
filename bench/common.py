"""What the benchmarks share: the 3-step workflow and its driver, the instant bench worker, the services as
processes, and the meters (percentiles, CPU per process, MongoDB operations).

    .venv/bin/python bench/common.py worker --env ENV --nats URL --mongodb URL

runs the bench worker as a process of its own (bench/agent_runtime.py does, so that it and the real agent runtime
are measured alike: each a process beside the engine)."""

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from contracts import Actor, EventRecord, Subjects
from contracts.workflows import AgentTask, ExecuteWorkflow, RecordTaskResult, WorkflowSpec, result_command_id
from servicekit import devstack
from servicekit.bus import ConsumerPolicy
from servicekit.commands import envelope_for, publish_command
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings

ENGINE = "workflow-engine"
WORKSPACE = "ws_bench"
ACTOR = Actor(kind="system", id="bench")
WORKER = Actor(kind="agent", id="bench-worker")  # task results come from agents, as from the real runtime
ROLE = "r"
SPEC = WorkflowSpec.model_validate(
    {
        "name": "Bench",
        "start": "a",
        "steps": [
            {"id": "a", "kind": "agent", "role": ROLE, "next": "b"},
            {"id": "b", "kind": "agent", "role": ROLE, "next": "c"},
            {"id": "c", "kind": "agent", "role": ROLE},
        ],
    }
)
PREVIOUS_STEP = {"b": "a", "c": "b"}
Document = dict[str, Any]


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: Sequence[float], q: float) -> str:
    """The ``q`` percentile of ``values`` (seconds) in milliseconds, printed."""
    return f"{pct(values, q) * 1000:.1f}"


def spread(values: Sequence[float], digits: int = 1) -> str:
    """The range of a figure over the repetitions: ``low-high`` (or the one value)."""
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if f"{low:.{digits}f}" == f"{high:.{digits}f}" else f"{low:.{digits}f}-{high:.{digits}f}"


@dataclass
class Figures:
    executions_s: float
    steps_s: float
    p50_ms: float
    p99_ms: float
    errors: int


@contextmanager
def service_process(
    module: str, env: dict[str, str], log_dir: Path, *, name: str | None = None, argv: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m module`` (or, with ``argv``, that command line) as a process of its own, until its /readyz
    answers; stopped on exit."""
    port = devstack.free_port()
    name = name or module
    command = list(argv) or [sys.executable, "-m", module]
    with (log_dir / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            command,
            env={"LOG_LEVEL": "WARNING", "RELAY_POLL_INTERVAL_S": "0.5", **env, "HTTP_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        devstack.wait_until(
            lambda: proc.poll() is None and devstack.http_ok(f"http://127.0.0.1:{port}/readyz"), 60, name
        )
        yield proc
    finally:
        devstack.stop_process(proc)


@contextmanager
def engine_process(env: dict[str, str], log_dir: Path) -> Iterator[None]:
    with service_process("workflow_engine", env, log_dir, name="engine"):
        yield


class BenchWorker:
    """An agent worker that completes every task at once with ``{"ok": 1}``: the engine's cost without an agent's."""

    def __init__(self, runtime: Runtime, on_result_sent: Callable[[AgentTask], None] | None = None) -> None:
        self.runtime = runtime
        self.on_result_sent = on_result_sent
        self.steps = 0

    def attach(self) -> None:
        subjects = self.runtime.bus.subjects
        self.runtime.bus.consume(
            subject=f"{subjects.env}.task.>",
            stream=subjects.tasks_stream,
            durable=subjects.durable("bench", "worker"),
            handler=self.on_task,
            policy=ConsumerPolicy(max_ack_pending=1024, max_workers=32),  # a worker runs tasks concurrently
        )

    async def on_task(self, body: bytes, headers: dict[str, str]) -> None:
        task = AgentTask.model_validate_json(body)
        result = RecordTaskResult(
            execution_id=task.execution_id, step_id=task.step_id, attempt=task.attempt, ok=True, output={"ok": 1}
        )
        envelope = envelope_for(
            result, workspace_id=task.workspace_id, command_id=result_command_id(task.key), actor=WORKER
        )
        if self.on_result_sent is not None:
            self.on_result_sent(task)
        await publish_command(self.runtime.bus, ENGINE, envelope)
        self.steps += 1


class Driver:
    """Sends executions (keeping a number in flight) and counts them done; with ``play_worker``, it is also the
    agent worker (in this process) and times each hand-over between steps: task result sent -> next task."""

    def __init__(self, runtime: Runtime, workspace_id: str = WORKSPACE, *, play_worker: bool = True) -> None:
        self.runtime = runtime
        self.workspace_id = workspace_id
        self.result_sent: dict[tuple[str, str], float] = {}
        self.overheads: list[float] = []
        self.done: dict[str, asyncio.Event] = {}
        self.worker = BenchWorker(runtime, self._result_sent) if play_worker else None

    @property
    def steps(self) -> int:
        return 0 if self.worker is None else self.worker.steps

    def _result_sent(self, task: AgentTask) -> None:
        now = time.perf_counter()
        previous = PREVIOUS_STEP.get(task.step_id)
        if previous is not None and (task.execution_id, previous) in self.result_sent:
            self.overheads.append(now - self.result_sent[(task.execution_id, previous)])
        self.result_sent[(task.execution_id, task.step_id)] = time.perf_counter()

    async def start(self) -> None:
        """Attach the worker (if any) and listen for completed executions; call after ``runtime.open()``."""
        if self.worker is not None:
            self.worker.attach()
        await self.runtime.start()
        env = self.runtime.bus.subjects.env
        await self.runtime.bus.nc.subscribe(
            f"{env}.evt.execution.{self.workspace_id}.*.ExecutionCompleted", cb=self.on_completed
        )

    async def on_completed(self, msg: Any) -> None:
        record = EventRecord.model_validate_json(msg.data)
        event = self.done.get(record.aggregate_id)
        if event is not None:
            event.set()

    async def drive(self, workflow_id: str, count: int, inflight: int, timeout_s: float = 60) -> tuple[float, int]:
        """Run ``count`` executions, ``inflight`` at a time; (seconds taken, executions that did not complete)."""
        gate = asyncio.Semaphore(inflight)
        errors = 0

        async def one() -> None:
            nonlocal errors
            async with gate:
                execution_id = "ex_" + uuid4().hex[:20]
                finished = self.done[execution_id] = asyncio.Event()
                command = ExecuteWorkflow(workflow_id=workflow_id, execution_id=execution_id)
                envelope = envelope_for(command, workspace_id=self.workspace_id, command_id=uuid4().hex, actor=ACTOR)
                await publish_command(self.runtime.bus, ENGINE, envelope)
                try:
                    await asyncio.wait_for(finished.wait(), timeout_s)
                except TimeoutError:
                    errors += 1
                finally:
                    del self.done[execution_id]

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return time.perf_counter() - started, errors

    async def run(self, workflow_id: str, count: int, inflight: int) -> Figures:
        self.overheads.clear()
        steps_before = self.steps
        elapsed, errors = await self.drive(workflow_id, count, inflight)
        return Figures(
            executions_s=(count - errors) / elapsed,
            steps_s=(self.steps - steps_before) / elapsed,
            p50_ms=pct(self.overheads, 0.5) * 1000,
            p99_ms=pct(self.overheads, 0.99) * 1000,
            errors=errors,
        )


async def quiesce(js: Any, subjects: Subjects, streams: Sequence[str] | None = None) -> None:
    """Wait until every consumer of the streams (the commands' and events' by default) has nothing left to deliver
    or to be acked (projections done catching up), so that what is measured next starts on an idle machine."""
    streams = streams or (subjects.commands_stream, subjects.events_stream)
    while True:
        busy = 0
        for stream in streams:
            for info in await js.consumers_info(stream):
                busy += (info.num_pending or 0) + (info.num_ack_pending or 0)
        if busy == 0:
            return
        await asyncio.sleep(0.2)


def command_line_group(argv: list[str]) -> str | None:
    """A child process's group for the CPU meter: its module (``-m``) or script name; None if neither."""
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1]
    scripts = [a for a in argv[1:] if a.endswith(".py")]
    return Path(scripts[0]).stem if scripts else None


class CpuMeter:
    """CPU seconds used by the services, the database, nats-server and this process (Linux /proc; else none).

    ``group_of`` names the group of a child process from its module or script (see ``command_line_group``)."""

    def __init__(self, group_of: Callable[[str], str] = lambda module: module) -> None:
        me = os.getpid()
        self.pids: dict[str, list[int]] = {"bench client": [me]}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
                argv = [a.decode(errors="replace") for a in (stat.parent / "cmdline").read_bytes().split(b"\0")]
            except OSError:
                continue
            comm, ppid = text[text.index("(") + 1 : text.rindex(")")], int(text[text.rindex(")") + 2 :].split()[1])
            group = None
            if ppid == me and any("secantusd" in a for a in argv):
                group = "mongodb"
            elif ppid == me and (name := command_line_group(argv)) is not None:
                group = group_of(name)
            elif comm == "nats-server":
                group = "nats-server"
            if group is not None:
                self.pids.setdefault(group, []).append(int(stat.parent.name))

    def regroup(self, pid: int, group: str) -> None:
        """Count process ``pid`` in ``group`` (two processes of one module, say, told apart)."""
        for pids in self.pids.values():
            if pid in pids:
                pids.remove(pid)
        self.pids.setdefault(group, []).append(pid)

    def snapshot(self) -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {}
        for group, pids in self.pids.items():
            total = 0
            for pid in pids:
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
            used[group] = total / tick
        return used


class Probe:
    """Samples the CPU meter and the MongoDB server's operation counters (when it reports them): ``opcounters``
    by kind, and ``requests``, the round trips it served (``network.numRequests``)."""

    def __init__(self, mongo: AsyncMongoClient[Document], meter: CpuMeter | None = None) -> None:
        self.meter = meter or CpuMeter()
        self.mongo = mongo

    async def sample(self) -> tuple[dict[str, float], dict[str, int]]:
        try:
            status = await self.mongo.admin.command("serverStatus")
            ops = {name: int(n) for name, n in status.get("opcounters", {}).items()}
            if "numRequests" in status.get("network", {}):
                ops["requests"] = int(status["network"]["numRequests"])
        except PyMongoError:
            ops = {}
        return self.meter.snapshot(), ops


class Meter:
    """The CPU and MongoDB probe, less what the machine does when idle (the services' polls, heartbeats and
    sweeps, in both environments): measured once, per second, and taken out of every run in proportion to its
    length, so that a slower run is not charged more of it per step."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.idle_cpu: dict[str, float] = {}
        self.idle_ops: dict[str, float] = {}

    async def calibrate(self, seconds: float) -> None:
        async def idle() -> None:
            await asyncio.sleep(seconds)

        _, cpu, ops, elapsed = await self._raw(idle)
        self.idle_cpu = {group: spent / elapsed for group, spent in cpu.items()}
        self.idle_ops = {name: n / elapsed for name, n in ops.items()}

    async def _raw(self, work: Callable[[], Awaitable[Any]]) -> tuple[Any, dict[str, float], dict[str, int], float]:
        cpu_before, ops_before = await self.probe.sample()
        started = time.perf_counter()
        result = await work()
        elapsed = time.perf_counter() - started
        cpu_after, ops_after = await self.probe.sample()
        cpu = {group: spent - cpu_before.get(group, 0.0) for group, spent in cpu_after.items()}
        ops = {name: n - ops_before.get(name, 0) for name, n in ops_after.items()}
        return result, cpu, ops, elapsed

    async def measured(self, work: Callable[[], Awaitable[Any]]) -> tuple[Any, dict[str, float], dict[str, int]]:
        result, cpu, ops, elapsed = await self._raw(work)
        cpu = {group: max(0.0, spent - self.idle_cpu.get(group, 0.0) * elapsed) for group, spent in cpu.items()}
        ops = {name: max(0, round(n - self.idle_ops.get(name, 0.0) * elapsed)) for name, n in ops.items()}
        return result, cpu, ops


def aligned(table: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def free_port_base() -> int:
    """A port from devstack.free_port above which every service's port is free too. devstack.services places the
    services at DEVSTACK_PORT_BASE plus their offset from 8000, so this keeps them off the ports in use."""
    offsets = [svc.port - 8000 for svc in devstack.SERVICES]
    for _ in range(100):
        base = devstack.free_port()
        if base + max(offsets) < 65536 and all(port_free(base + offset) for offset in offsets):
            return base
    raise RuntimeError("no free range of ports for the services")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def serve_worker(env: str, nats_url: str, mongodb_url: str) -> None:
    """The bench worker as a process: consumes the environment's tasks until SIGTERM; /readyz on HTTP_PORT."""
    settings = ServiceSettings(
        service_name="bench-worker", platform_env=env, nats_url=nats_url, mongodb_url=mongodb_url
    )
    runtime = Runtime(settings)
    await runtime.open()
    BenchWorker(runtime).attach()
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(ready, "127.0.0.1", int(os.environ["HTTP_PORT"]))
    try:
        await stop.wait()
    finally:
        server.close()
        await runtime.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["worker"])
    parser.add_argument("--env", required=True)
    parser.add_argument("--nats", required=True)
    parser.add_argument("--mongodb", required=True)
    args = parser.parse_args()
    asyncio.run(serve_worker(args.env, args.nats, args.mongodb))


if __name__ == "__main__":
    main()
