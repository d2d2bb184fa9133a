"""``python -m gateway.admin`` as a process: with no MongoDB to reach it says so in a sentence, not a stack trace."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from servicekit.devstack import free_port, port_open


def admin(cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"MONGODB_URL", "NATS_URL", "PLATFORM_ENV"}}
    return subprocess.run(
        [sys.executable, "-m", "gateway.admin", "create-workspace", "Nobody"],
        cwd=cwd,
        env={**base, "MONGO_TIMEOUT_MS": "500", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_unreachable_mongodb_url_is_named_in_a_clear_error(tmp_path: Path) -> None:
    url = f"mongodb://admin:s3cret@127.0.0.1:{free_port()}"
    done = admin(tmp_path, MONGODB_URL=url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("gateway.admin: cannot reach MongoDB at mongodb://admin:***@127.0.0.1:")
    assert "(given by MONGODB_URL)" in done.stderr
    assert "s3cret" not in done.stderr


def test_without_mongodb_url_or_a_running_stack_it_says_to_start_one(tmp_path: Path) -> None:
    if port_open("127.0.0.1", 27017):
        pytest.skip("a MongoDB answers at the default URL on this machine")
    done = admin(tmp_path, PLATFORM_ENV="nothing_here")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot reach MongoDB at mongodb://127.0.0.1:27017" in done.stderr
    assert "no `make up` runs in this checkout for PLATFORM_ENV='nothing_here'" in done.stderr
