"""`make up`'s launcher (``python -m servicekit.devstack up``) run by a test as a process on free ports: its output
read as it comes, the gateway's URL and the workspace's API key it prints, the pids of the services it started."""

import json
import os
import random
import select
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from servicekit.devstack import SERVICES, port_open


def free_port_base() -> int:
    for _ in range(100):
        # Below Linux's ephemeral range (32768+), where the kernel would hand ports to outgoing connections.
        base = random.randrange(20000, 32000, 10)
        if not any(port_open("127.0.0.1", base + i) for i in range(len(SERVICES))):
            return base
    raise RuntimeError("no free port range")


@dataclass
class Launcher:
    proc: subprocess.Popen[bytes]
    root: Path
    env_name: str
    output: bytes = b""
    gateway: str = ""
    key: str = ""
    base: int = 0
    lines: list[str] = field(default_factory=list)

    def read_until(self, marker: str, timeout_s: float) -> list[str]:
        """Read the launcher's output (unbuffered, so select() tells the truth) until a new line holds ``marker``;
        the lines read so far."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        seen = len(self.lines)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                chunk = os.read(fd, 65536)
                self.output += chunk
                self.lines = self.output.decode(errors="replace").splitlines()
                if any(marker in line for line in self.lines[seen:]):
                    return self.lines
                if not chunk:
                    break
        raise AssertionError(f"{marker!r} not printed; output so far:\n{self.output.decode(errors='replace')}")

    @property
    def state(self) -> dict[str, object]:
        state: dict[str, object] = json.loads((self.root / ".data" / f"stack-{self.env_name}.json").read_text())
        return state

    def pid_of(self, service: str) -> int:
        services: dict[str, dict[str, int]] = self.state["services"]  # type: ignore[assignment]
        return services[service]["pid"]
