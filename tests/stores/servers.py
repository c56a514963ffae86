"""Object-store servers on 127.0.0.1, each in a process group of its own: started on a free port, awaited
until they answer HTTP, stopped by group (TERM, then KILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests

HOST = "127.0.0.1"
#: How long a server may take to answer its first request (all three start in under 4 s here).
START_SECONDS = 60.0
#: How long a server may take to leave on SIGTERM before its group is killed.
STOP_SECONDS = 5.0


def free_port() -> int:
    """A port nobody listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass
class ServerProcess:
    """One server: its command, where it listens, and its log (shown when it fails to start)."""

    name: str
    command: list[str]
    port: int
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> ServerProcess:
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=self.cwd,
            start_new_session=True,  # its own process group: stopped with everything it started
        )
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_it_answers(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_text()[-4000:]}"
                )
            try:
                requests.get(self.url, timeout=2)  # any HTTP answer will do: it listens and serves
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.name} did not answer on {self.url}:\n{self.log_text()[-4000:]}"
                    ) from None
                time.sleep(0.1)
            else:
                return

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """TERM to the whole group, then KILL to what is left of it."""
        process, self.process = self.process, None
        if process is not None:
            group = process.pid  # a session leader's pid is its group's id
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_SECONDS)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)  # children that outlived their leader, or the leader
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=STOP_SECONDS)
        if self._log is not None:
            self._log.close()
            self._log = None
