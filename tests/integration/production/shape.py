"""The deployment users outgrow one machine with, on this one: PostgreSQL for the metadata, Redis as the
Celery broker, two Celery workers and two triggerers, every server on 127.0.0.1, started by the tests and
stopped by process group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.airflow_cluster import Component, free_port, running_cluster

PG_BIN = (
    sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1] if Path("/usr/lib/postgresql").exists() else None
)


@dataclass
class Server:
    """A server process in a process group of its own, stopped with the group."""

    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


def _as_postgres(*command: str, **options: Any) -> subprocess.CompletedProcess[str]:
    """PostgreSQL refuses to run as root: its tools run as the ``postgres`` user."""
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *command], text=True, capture_output=True, **options
    )


@dataclass
class Postgres:
    """A private PostgreSQL cluster: its own data directory, port and socket directory."""

    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/airflow"

    def start(self) -> None:
        assert PG_BIN is not None, "PostgreSQL is not installed"
        log = self.folder / "postgres.log"
        result = _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.folder / "data"),
            "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200",
            "-l",
            str(log),
            "-w",
            "start",
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"PostgreSQL did not start: {result.stderr}\n{log.read_text(errors='replace')[-2000:]}"
            )

    def stop(self, mode: str = "fast") -> None:
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.folder / "data"),
            "-m",
            mode,
            "-w",
            "stop",
            timeout=60,
            check=False,
        )

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    folder = Path(tempfile.mkdtemp(prefix="hitpaw-pg-"))
    shutil.chown(folder, "postgres", "postgres")
    server = Postgres(folder, free_port())
    init = _as_postgres(
        str(PG_BIN / "initdb"),
        "-D",
        str(folder / "data"),
        "-A",
        "trust",
        "-U",
        "postgres",
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        raise RuntimeError(f"initdb failed: {init.stderr}")
    server.start()
    try:
        _as_postgres(
            str(PG_BIN / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-U",
            "postgres",
            "airflow",
            timeout=60,
            check=True,
        )
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def redis() -> Iterator[Server]:
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Server(process, port)
    try:
        deadline = time.monotonic() + 30
        while (
            subprocess.run(
                ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True
            ).stdout.strip()
            != "PONG"
        ):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("Redis did not start")
            time.sleep(0.2)
        yield server
    finally:
        server.stop()


def components(workers: int = 2, triggerers: int = 2) -> list[Component]:
    """Celery workers and triggerers, each labelled and naming itself (its ``job.hostname``)."""
    found = []
    for index in range(1, triggerers + 1):
        label = f"triggerer-{index}"
        found.append(Component(label, "triggerer", ["--skip-serve-logs"], {"HITPAW_TEST_HOSTNAME": label}))
    for index in range(1, workers + 1):
        label = f"worker-{index}"
        found.append(
            Component(
                label,
                "celery worker",
                ["--celery-hostname", f"{label}@127.0.0.1", "--concurrency", "2", "--skip-serve-logs"],
                {"HITPAW_TEST_HOSTNAME": label},
            )
        )
    return found


def shape_env(database: Postgres, broker: Server) -> dict[str, str]:
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database.url,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{broker.port}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://postgres@127.0.0.1:{database.port}/airflow",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.integration.production.hostname.from_env",
        # Airflow's production defaults otherwise; these only make a dead component noticed sooner.
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    }


@contextlib.contextmanager
def production_cluster(
    emulator: Any, home: Path, dag_files: list[Path], **options: Any
) -> Iterator[tuple[Any, Postgres]]:
    with (
        postgres() as database,
        redis() as broker,
        running_cluster(
            emulator,
            home,
            dag_files,
            extra_env=shape_env(database, broker),
            extra_components=components(),
            # Under systemd or Kubernetes, as in production: the scheduler exits when PostgreSQL goes.
            supervised=frozenset({"api-server", "scheduler", "dag-processor"}),
            **options,
        ) as cluster,
    ):
        yield cluster, database
