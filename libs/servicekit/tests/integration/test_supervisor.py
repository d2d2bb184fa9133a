"""The dev stack's supervisor with real child processes: a process that dies is started again and said to be, and
one that keeps dying at once is given up on, loudly."""

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from servicekit.devstack import Supervisor


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def supervisor(said: list[str]) -> Iterator[Supervisor]:
    supervisor = Supervisor(base_delay_s=0.05, max_delay_s=0.2, stable_s=60, max_quick_exits=3, report=said.append)
    yield supervisor
    supervisor.stop()


def poll_until(supervisor: Supervisor, done: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "the supervisor did not get there"
        supervisor.poll()
        time.sleep(0.02)


def test_a_killed_process_is_restarted_and_the_kill_is_reported(
    supervisor: Supervisor, said: list[str], tmp_path: Path
) -> None:
    supervisor.start(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], dict(os.environ), tmp_path / "log"
    )
    first = supervisor.processes["sleeper"].pid
    assert first is not None
    os.kill(first, signal.SIGKILL)

    poll_until(supervisor, lambda: supervisor.processes["sleeper"].restarts == 1)
    second = supervisor.processes["sleeper"].pid
    assert second is not None
    assert second != first
    assert "sleeper killed by SIGKILL" in said[0]
    assert "restarting in" in said[0]
    assert said[1].startswith(f"sleeper restarted (pid {second}")


def test_a_process_that_keeps_failing_at_once_is_given_up_on(
    supervisor: Supervisor, said: list[str], tmp_path: Path
) -> None:
    changes: list[int | None] = []
    supervisor.on_change = lambda: changes.append(supervisor.processes["failing"].pid)
    supervisor.start("failing", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), tmp_path / "log")

    poll_until(supervisor, lambda: supervisor.processes["failing"].gave_up)
    exits = [line for line in said if "exited with code 3" in line]
    assert len(exits) == 3, said
    assert [line.startswith("failing restarted") for line in said if "restarted" in line] == [True, True]
    assert said[-1].startswith("GIVING UP on failing")
    assert len(changes) == 6, "the stack's state is rewritten at every start and exit"
    assert changes[1::2] == [None, None, None], "an exited process has no pid"

    for _ in range(20):
        supervisor.poll()
    assert supervisor.processes["failing"].restarts == 2, "it stays down"
