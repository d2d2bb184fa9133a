"""The one-machine stack: infrastructure when it is missing, then the five services as processes.

``python -m servicekit.devstack up`` is what ``make up`` runs. MongoDB: MONGODB_URL when set, otherwise a
SecantusDB server (``secantusd-py``, a MongoDB-wire server kept as its own GPL process; nothing imports it) with
its data under ``.data/``. NATS: NATS_URL (default nats://127.0.0.1:4222); when nothing answers there and
``nats-server`` is on PATH, one is started with JetStream.

The services are supervised: one that exits is started again after a backoff that doubles with each exit in quick
succession, and every exit and restart is printed; after repeated quick exits the launcher gives up on that service,
loudly, and keeps the others running. While the stack runs, ``.data/stack-<env>.json`` holds its MongoDB and NATS
URLs and its services' URLs and process ids, so that a command run beside it (``python -m gateway.admin``) finds the
stack without being told where it is (``running_stack``).
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from contracts import Subjects
from servicekit.bus import delete_streams
from servicekit.mongo import connect_mongo

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


@dataclass(frozen=True, slots=True)
class ServiceProcess:
    name: str
    module: str
    port: int


SERVICES: tuple[ServiceProcess, ...] = (
    ServiceProcess("gateway", "gateway", 8000),
    ServiceProcess("orchestrator", "orchestrator", 8001),
    ServiceProcess("workflow-engine", "workflow_engine", 8002),
    ServiceProcess("memory", "memory", 8003),
    ServiceProcess("neptune", "neptune", 8004),
    ServiceProcess("agent-runtime", "orchestrator.runtime", 8005),
)


def redacted(url: str) -> str:
    """``url`` with the password of its user info masked, for printing."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


@contextmanager
def mongodb(data_dir: Path, log_dir: Path) -> Iterator[str]:
    """Yields a MongoDB URL: MONGODB_URL when set, else a SecantusDB server started for the duration."""
    url = os.environ.get("MONGODB_URL")
    if url:
        yield url
        return
    exe = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "mongodb.log").open("ab") as log:
        proc = subprocess.Popen(
            [
                exe,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--storage-path",
                str(data_dir),
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: proc.poll() is None and port_open("127.0.0.1", port), 60, "SecantusDB")
        # SecantusDB slows down with every retryable write it records; real MongoDB keeps the driver default.
        yield f"mongodb://127.0.0.1:{port}/?retryWrites=false"
    finally:
        stop_process(proc)


@contextmanager
def nats(data_dir: Path, log_dir: Path) -> Iterator[str]:
    """Yields a NATS URL: NATS_URL (or the default) when it answers, else a nats-server started with JetStream."""
    url = os.environ.get("NATS_URL", DEFAULT_NATS_URL)
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 4222
    if port_open(host, port):
        yield url
        return
    exe = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    if exe is None:
        raise RuntimeError(f"nothing answers at {url} and nats-server is not installed")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "nats.log").open("ab") as log:
        proc = subprocess.Popen(
            [exe, "-a", host, "-p", str(port), "-js", "-sd", str(data_dir)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_until(lambda: port_open(host, port), 30, "nats-server")
        yield url
    finally:
        stop_process(proc)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - local health URL
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` or ``killed by SIGKILL``, from a Popen return code."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Supervised:
    """One supervised process and what became of it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    url: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0  # exits in a row, each within ``stable_s`` of its start
    restarts: int = 0
    restart_at: float | None = None
    awaiting_ready: bool = False
    gave_up: bool = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None


@dataclass
class Supervisor:
    """Keeps processes running. One that exits is started again after ``base_delay_s``, doubled with each further
    exit within ``stable_s`` of its start (up to ``max_delay_s``); a run that lasted ``stable_s`` clears the count.
    After ``max_quick_exits`` quick exits in a row it gives up on the process (and says so) and leaves the others
    running. ``poll`` does the work; call it every fraction of a second. ``on_change`` runs after every start and
    exit (the launcher rewrites the stack's state file with it)."""

    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_s: float = 30.0
    max_quick_exits: int = 5
    report: Callable[[str], None] = say
    on_change: Callable[[], None] | None = None
    processes: dict[str, Supervised] = field(default_factory=dict)

    @property
    def urls(self) -> dict[str, str]:
        return {name: p.url for name, p in self.processes.items() if p.url is not None}

    def start(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, url: str | None = None) -> None:
        """Start ``argv`` (output appended to ``log_path``); ``url`` is its HTTP base, whose /readyz tells when a
        restarted process is back."""
        supervised = Supervised(name, argv, env, log_path, url)
        self.processes[name] = supervised
        self._spawn(supervised)

    def _spawn(self, p: Supervised) -> None:
        p.log_path.parent.mkdir(parents=True, exist_ok=True)
        with p.log_path.open("ab") as log:
            p.proc = subprocess.Popen(p.argv, env=p.env, stdout=log, stderr=subprocess.STDOUT)
        p.started_at = time.monotonic()
        p.restart_at = None
        if self.on_change is not None:
            self.on_change()

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until every process's /readyz answers 200; a process that exits meanwhile fails the start."""
        for p in self.processes.values():
            if p.url is None:
                continue

            def ready(p: Supervised = p) -> bool:
                if p.proc is not None and p.proc.poll() is not None:
                    raise RuntimeError(f"{p.name} {describe_exit(p.proc.returncode)} while starting; see {p.log_path}")
                return http_ok(f"{p.url}/readyz")

            wait_until(ready, timeout_s, p.name)

    def poll(self) -> None:
        now = time.monotonic()
        for p in self.processes.values():
            if p.gave_up:
                continue
            if p.proc is not None and p.proc.poll() is not None:
                self._exited(p, p.proc.returncode, now)
            elif p.proc is None and p.restart_at is not None and now >= p.restart_at:
                p.restarts += 1
                self._spawn(p)
                assert p.proc is not None
                self.report(f"{p.name} restarted (pid {p.proc.pid}, restart {p.restarts})")
                p.awaiting_ready = p.url is not None
            elif p.awaiting_ready and p.url is not None and http_ok(f"{p.url}/readyz", timeout=0.5):
                p.awaiting_ready = False
                self.report(f"{p.name} is ready again")

    def _exited(self, p: Supervised, returncode: int, now: float) -> None:
        ran = now - p.started_at
        p.proc = None
        p.awaiting_ready = False
        if self.on_change is not None:
            self.on_change()
        p.quick_exits = p.quick_exits + 1 if ran < self.stable_s else 1
        how = f"{p.name} {describe_exit(returncode)} after {ran:.1f}s"
        if p.quick_exits >= self.max_quick_exits:
            p.gave_up = True
            self.report(
                f"GIVING UP on {p.name}: {how}, {p.quick_exits} exits in a row, each within {self.stable_s:.0f}s of "
                f"its start. It stays down (the rest keeps running); see {p.log_path}"
            )
            return
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** (p.quick_exits - 1))
        p.restart_at = now + delay
        self.report(f"{how}; restarting in {delay:.1f}s (see {p.log_path})")

    def stop(self) -> None:
        for p in self.processes.values():
            p.restart_at = None
            if p.proc is not None:
                stop_process(p.proc)


@contextmanager
def services(
    env: dict[str, str],
    log_dir: Path,
    supervisor: Supervisor | None = None,
    only: Mapping[str, Mapping[str, str]] | None = None,
) -> Iterator[Supervisor]:
    """Starts the services (the five and the agent runtime) under ``supervisor`` (a default one when None); yields it
    once every /readyz answers 200 (its ``urls`` are the services' base URLs by name). Keep calling its ``poll``
    while they should run. ``only`` adds variables to one service's environment, by service name."""
    supervisor = supervisor or Supervisor()
    try:
        base = int(os.environ.get("DEVSTACK_PORT_BASE", "8000"))
        wiring = {"neptune": {"GATEWAY_URL": f"http://127.0.0.1:{base}"}}  # Neptune acts through the gateway
        for svc in SERVICES:
            port = base + (svc.port - 8000)
            extra = {**wiring.get(svc.name, {}), **(only or {}).get(svc.name, {})}
            supervisor.start(
                svc.name,
                [sys.executable, "-m", svc.module],
                {**env, **extra, "HTTP_PORT": str(port), "OTEL_SERVICE_NAME": svc.name},
                log_dir / f"{svc.name}.log",
                url=f"http://127.0.0.1:{port}",
            )
        supervisor.wait_ready(60)
        yield supervisor
    finally:
        supervisor.stop()


def create_workspace(env: dict[str, str], name: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "gateway.admin", "create-workspace", name],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    result: dict[str, str] = json.loads(out.stdout)
    return result


def dev_workspace(env: dict[str, str], gateway_url: str, state_file: Path) -> dict[str, str]:
    """The workspace of this checkout: created on the first `make up`, reused after."""
    if state_file.exists():
        saved: dict[str, str] = json.loads(state_file.read_text())
        request = urllib.request.Request(  # noqa: S310 - local URL
            gateway_url + "/api/v1/workspace", headers={"Authorization": f"Bearer {saved['api_key']}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5):  # noqa: S310 - local URL
                return saved
        except (urllib.error.URLError, OSError):
            pass
    created = create_workspace(env, "Default workspace")
    state_file.write_text(json.dumps(created))
    state_file.chmod(0o600)
    return created


STATE_FILE = "stack-{env}.json"


@dataclass(frozen=True, slots=True)
class RunningStack:
    """What ``.data/stack-<env>.json`` says about a running ``make up``."""

    path: Path
    platform_env: str
    mongodb_url: str
    nats_url: str
    launcher_pid: int
    services: dict[str, dict[str, object]]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_stack(path: Path) -> RunningStack | None:
    """The stack a state file describes, when its launcher still runs (a killed launcher leaves a stale file)."""
    try:
        saved = json.loads(path.read_text())
        stack = RunningStack(
            path,
            str(saved["platform_env"]),
            str(saved["mongodb_url"]),
            str(saved["nats_url"]),
            int(saved["launcher_pid"]),
            dict(saved.get("services", {})),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return stack if _alive(stack.launcher_pid) else None


def running_stack(start: Path, env: str) -> RunningStack | None:
    """The ``make up`` of environment ``env`` running in the checkout at ``start`` or above it, if any."""
    for folder in (start, *start.parents):
        stack = read_stack(folder / ".data" / STATE_FILE.format(env=env))
        if stack is not None:
            return stack
    return None


def running_stacks(start: Path) -> list[RunningStack]:
    """Every running ``make up`` of the checkout at ``start`` or above it, whatever its environment."""
    for folder in (start, *start.parents):
        found = [s for path in sorted((folder / ".data").glob(STATE_FILE.format(env="*"))) if (s := read_stack(path))]
        if found:
            return found
    return []


def write_stack(path: Path, env: str, mongodb_url: str, nats_url: str, supervisor: Supervisor) -> None:
    state = {
        "platform_env": env,
        "mongodb_url": mongodb_url,
        "nats_url": nats_url,
        "launcher_pid": os.getpid(),
        "services": {name: {"url": p.url, "pid": p.pid} for name, p in supervisor.processes.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(state, indent=2))
    partial.chmod(0o600)  # the MongoDB URL may carry credentials
    partial.replace(path)


@contextmanager
def local_model(root: Path, log_dir: Path) -> Iterator[dict[str, str]]:
    """With LOCAL_LLM set (servicekit.local_llm's profiles): the model's server for the duration, and the agent
    runtime's settings that point at it; with it unset, nothing."""
    name = os.environ.get("LOCAL_LLM", "").strip()
    if not name:
        yield {}
        return
    from servicekit import local_llm  # it builds on this module

    try:
        chosen = local_llm.profile(name)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    try:
        with local_llm.running(root, chosen, log_dir, say=lambda line: print(line, flush=True)) as server:
            yield server.runtime_env()
    except local_llm.LlmUnavailable as exc:  # raised before the stack starts, never by it
        raise SystemExit(f"LOCAL_LLM={chosen.name}: {exc}") from None


def up(root: Path) -> None:
    data = root / ".data"
    logs = data / "logs"
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    env_name = os.environ.get("PLATFORM_ENV", "dev")
    state_file = data / STATE_FILE.format(env=env_name)
    already = read_stack(state_file)
    if already is not None:
        raise SystemExit(f"make up already runs here for environment {env_name!r} (pid {already.launcher_pid}).")
    with (
        local_model(root, logs) as runtime_env,
        mongodb(data / "mongodb", logs) as mongo_url,
        nats(data / "nats", logs) as nats_url,
    ):
        env = {**os.environ, "MONGODB_URL": mongo_url, "NATS_URL": nats_url, "PLATFORM_ENV": env_name}
        supervisor = Supervisor()
        supervisor.on_change = lambda: write_stack(state_file, env_name, mongo_url, nats_url, supervisor)
        try:
            with services(env, logs, supervisor, only={"agent-runtime": runtime_env}) as stack:
                urls = stack.urls
                workspace = dev_workspace(env, urls["gateway"], data / f"workspace-{env_name}.json")
                print(
                    f"\nAgent platform is up (environment {env_name!r}).\n"
                    f"  Gateway:   {urls['gateway']}   (OpenAPI: {urls['gateway']}/docs)\n"
                    f"  Workspace: {workspace['workspace_id']}\n"
                    f"  API key:   {workspace['api_key']}\n"
                    f"  MongoDB:   {redacted(mongo_url)}\n"
                    f"  NATS:      {redacted(nats_url)}\n"
                    f"  Logs:      {logs}\n"
                    "Services that exit are restarted. Press Ctrl-C to stop.",
                    flush=True,
                )
                try:
                    while not stop["now"]:
                        stack.poll()
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
                print("\nStopping...", flush=True)
        finally:
            state_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m servicekit.devstack")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--root", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    up(args.root.resolve())


if __name__ == "__main__":
    main()


async def drop_environment(
    env: str, *, mongodb_url: str, nats_url: str | None = None, extra_streams: Sequence[str] = ()
) -> None:
    """Remove what an environment left behind: its JetStream streams (and ``extra_streams``) and every database
    named ``<env>_...``. Tests and benchmarks clean up with it."""
    if nats_url is not None:
        nc = NatsClient()
        await nc.connect(nats_url, connect_timeout=10)
        try:
            js = nc.jetstream(timeout=10)
            await delete_streams(js, Subjects(env))
            for name in extra_streams:
                with contextlib.suppress(NotFoundError):
                    await js.delete_stream(name)
        finally:
            await nc.close()
    client = connect_mongo(mongodb_url, 10_000)
    try:
        for name in await client.list_database_names():
            if name.startswith(env + "_"):
                await client.drop_database(name)
    finally:
        await client.close()
