"""The system tests' fixtures: `make up`'s processes started for a test (``stack``)."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Infra
from servicekit.devstack import SERVICES, port_open
from tests.support.stack import Launcher, free_port_base


@pytest.fixture
def stack(infra: Infra, env_name: str, tmp_path: Path) -> Iterator[Launcher]:
    base = free_port_base()
    env = {
        **{k: v for k, v in os.environ.items() if k != "LOCAL_LLM"},  # the real model has a test of its own
        "MONGODB_URL": infra.mongodb_url,
        "NATS_URL": infra.nats_url,
        "PLATFORM_ENV": env_name,
        "DEVSTACK_PORT_BASE": str(base),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "servicekit.devstack", "up", "--root", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    launcher = Launcher(proc, tmp_path, env_name, base=base)
    try:
        lines = launcher.read_until("Press Ctrl-C", 120)
        launcher.key = next(line.split("API key:")[1].strip() for line in lines if "API key:" in line)
        launcher.gateway = next(line.split("Gateway:")[1].split()[0] for line in lines if "Gateway:" in line)
        assert any(f"MongoDB:   {infra.mongodb_url}" in line for line in lines), "make up prints the MongoDB URL"
        yield launcher
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0
    assert not any(port_open("127.0.0.1", base + i) for i in range(len(SERVICES))), "Ctrl-C stops every service"
    assert not (tmp_path / ".data" / f"stack-{env_name}.json").exists(), "the stack's state goes with it"
