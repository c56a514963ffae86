"""Run a DAG end to end against the local HitPaw emulator, from a test or a script, with nothing set up.

:func:`run_dag` runs ``airflow dags test`` for one DAG in a throw-away ``AIRFLOW_HOME`` (its metadata
database migrated first), with the ``hitpaw_default`` connection pointing at an emulator: no key, no coin,
no Airflow installation of yours touched. The ``hitpaw_dag_run`` pytest fixture (registered by this
package) does the same against the ``hitpaw_emulator`` fixture::

    def test_my_dag_segments(hitpaw_emulator, hitpaw_dag_run, tmp_path):
        run = hitpaw_dag_run("dags/my_dag.py", "my_dag", conf={"output": f"file://{tmp_path}"})
        assert run.succeeded, run.output
        assert len(hitpaw_emulator.state()["jobs"]) == 3

Needs the emulator extra: ``pip install "airflow-provider-hitpaw[emulator]"``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Environment variables of the caller's Airflow that must not leak into the run (its home, its DB).
_ISOLATED_PREFIXES = ("AIRFLOW_", "AIRFLOW__")


@dataclass(frozen=True)
class DagTestRun:
    """What ``airflow dags test`` did: its exit status and everything it printed."""

    dag_id: str
    returncode: int
    output: str
    airflow_home: Path

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0

    def raise_for_failure(self) -> None:
        if not self.succeeded:
            raise AssertionError(
                f"airflow dags test {self.dag_id} failed ({self.returncode}):\n{self.output[-6000:]}"
            )


def emulator_connection(base_url: str, api_key: str) -> str:
    """``AIRFLOW_CONN_HITPAW_DEFAULT`` for an emulator, in Airflow's JSON form."""
    return json.dumps({"conn_type": "hitpaw", "host": base_url, "password": api_key})


def run_dag(
    dag_path: str | os.PathLike[str],
    dag_id: str,
    *,
    base_url: str,
    api_key: str,
    conf: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    airflow_home: str | os.PathLike[str] | None = None,
    timeout: float = 900,
) -> DagTestRun:
    """Run ``dag_id`` from ``dag_path`` (a DAG file, or the folder it is in) with ``airflow dags test``.

    :param base_url: the emulator's base URL (``hitpaw_emulator.base_url``), the connection's host.
    :param api_key: a key the emulator accepts (``hitpaw_emulator.api_key``).
    :param conf: the DAG run's conf (``params`` the DAG reads).
    :param env: more environment for the run (``HITPAW_EXAMPLE_*`` settings, ``AIRFLOW__...`` options).
    :param airflow_home: keep Airflow's state there (a fresh temporary folder by default, removed after).
    """
    dags = Path(dag_path).resolve()
    folder = dags if dags.is_dir() else dags.parent
    if airflow_home is None:
        with tempfile.TemporaryDirectory(prefix="hitpaw-dag-test-") as home:
            return _run(folder, dag_id, Path(home), base_url, api_key, conf, env, timeout)
    return _run(folder, dag_id, Path(airflow_home), base_url, api_key, conf, env, timeout)


def _run(
    folder: Path,
    dag_id: str,
    home: Path,
    base_url: str,
    api_key: str,
    conf: Mapping[str, Any] | None,
    env: Mapping[str, str] | None,
    timeout: float,
) -> DagTestRun:
    home.mkdir(parents=True, exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_ISOLATED_PREFIXES)}
    environment.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_HITPAW_DEFAULT": emulator_connection(base_url, api_key),
            # `dags test` runs triggers in its own process, without the executor race the hold avoids.
            "AIRFLOW__HITPAW__MIN_DEFERRED_SECONDS": "0",
            # Airflow 3.0's `dags test` does not put the DAGs folder on sys.path (the dag-processor
            # does): a DAG importing a module beside it would fail only under test.
            "PYTHONPATH": os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])),
            **(env or {}),
        }
    )
    airflow = [sys.executable, "-m", "airflow"]
    migrated = home / ".hitpaw-migrated"  # one migration per home: a kept home runs the next DAG at once
    if not migrated.exists():
        migrate = subprocess.run(  # noqa: S603 (this interpreter's own Airflow)
            [*airflow, "db", "migrate"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if migrate.returncode != 0:
            return DagTestRun(dag_id, migrate.returncode, migrate.stdout + migrate.stderr, home)
        migrated.touch()
    command = [*airflow, "dags", "test", dag_id]
    if conf:
        command += ["--conf", json.dumps(dict(conf))]
    run = subprocess.run(  # noqa: S603 (this interpreter's own Airflow)
        command, env=environment, capture_output=True, text=True, timeout=timeout, check=False
    )
    return DagTestRun(dag_id, run.returncode, run.stdout + run.stderr, home)
