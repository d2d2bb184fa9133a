"""The one-machine stack: infrastructure when it is missing, then the five services as processes.

``python -m servicekit.devstack up`` is what ``make up`` runs. MongoDB: MONGODB_URL when set, otherwise a
SecantusDB server (``secantusd-py``, a MongoDB-wire server kept as its own GPL process; nothing imports it) with
its data under ``.data/``. NATS: NATS_URL (default nats://127.0.0.1:4222); when nothing answers there and
``nats-server`` is on PATH, one is started with JetStream.
"""

import argparse
import contextlib
import json
import os
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
from dataclasses import dataclass
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


@contextmanager
def services(
    env: dict[str, str], log_dir: Path, only: Mapping[str, Mapping[str, str]] | None = None
) -> Iterator[dict[str, str]]:
    """Starts the services (the five and the agent runtime); yields their base URLs by name once every /readyz
    answers 200. ``only`` adds variables to one service's environment, by service name."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        base = int(os.environ.get("DEVSTACK_PORT_BASE", "8000"))
        for svc in SERVICES:
            port = base + (svc.port - 8000)
            with (log_dir / f"{svc.name}.log").open("ab") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", svc.module],
                        env={
                            **env,
                            **(only or {}).get(svc.name, {}),
                            "HTTP_PORT": str(port),
                            "OTEL_SERVICE_NAME": svc.name,
                        },
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            urls[svc.name] = f"http://127.0.0.1:{port}"
        for (name, url), proc in zip(urls.items(), procs, strict=True):
            wait_until(lambda: proc.poll() is None and http_ok(url + "/readyz"), 60, name)  # noqa: B023
        yield urls
    finally:
        for proc in procs:
            stop_process(proc)


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
    with (
        local_model(root, logs) as runtime_env,
        mongodb(data / "mongodb", logs) as mongo_url,
        nats(data / "nats", logs) as nats_url,
    ):
        env = {**os.environ, "MONGODB_URL": mongo_url, "NATS_URL": nats_url, "PLATFORM_ENV": env_name}
        with services(env, logs, only={"agent-runtime": runtime_env}) as urls:
            workspace = dev_workspace(env, urls["gateway"], data / f"workspace-{env_name}.json")
            print(
                f"\nAgent platform is up (environment {env_name!r}).\n"
                f"  Gateway:   {urls['gateway']}   (OpenAPI: {urls['gateway']}/docs)\n"
                f"  Workspace: {workspace['workspace_id']}\n"
                f"  API key:   {workspace['api_key']}\n"
                f"  Logs:      {logs}\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )
            try:
                while not stop["now"]:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            print("\nStopping...", flush=True)


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
