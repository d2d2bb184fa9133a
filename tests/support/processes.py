"""A service run as a real process by a test, on a free port: started, killed (-9), restarted, stopped."""

import os
import signal
import subprocess
import sys
from pathlib import Path

from servicekit.devstack import free_port, http_ok, wait_until


class ServiceProcess:
    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.module, self.env, self.log, self.port = module, env, log, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until its /readyz answers."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env={**self.env, "HTTP_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc
        wait_until(lambda: proc.poll() is None and http_ok(f"http://127.0.0.1:{self.port}/readyz"), 60, self.module)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
