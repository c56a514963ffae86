"""pytest plugin ``hitpaw``: fixtures that run the HitPaw emulator for a test session.

This module is loaded into *every* pytest session of anyone who installs the package (entry point
``pytest11``), so it imports nothing but pytest and the standard library at module level; the emulator
(aiohttp, numpy, Pillow) is imported only when a test asks for one of its fixtures.

Fixtures:

* ``hitpaw_emulator_server`` (session): one :class:`~airflow_provider_hitpaw.emulator.runner.EmulatorServer`
  on 127.0.0.1, a free port, jobs lasting ``hitpaw_emulator_job_seconds`` (ini option, default 0.2 s).
* ``hitpaw_emulator`` (function): resets that server (jobs, coins, keys, faults, counters), points the
  Airflow connection ``hitpaw_default`` at it through ``AIRFLOW_CONN_HITPAW_DEFAULT`` (monkeypatched,
  so it is undone after the test) and returns a :class:`HitPawEmulatorHandle`.
* ``hitpaw_dag_run`` (function): runs a DAG file of yours end to end (``airflow dags test``) against that
  emulator, in a temporary ``AIRFLOW_HOME`` (see :mod:`airflow_provider_hitpaw.testing`).
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from airflow_provider_hitpaw.emulator.faults import FaultRule
    from airflow_provider_hitpaw.emulator.runner import EmulatorServer

CONN_ID = "hitpaw_default"
CONN_ENV_VAR = "AIRFLOW_CONN_HITPAW_DEFAULT"
_JOB_SECONDS_INI = "hitpaw_emulator_job_seconds"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ini option for the fixture server's job duration."""
    parser.addini(
        _JOB_SECONDS_INI, "seconds a job stays CONVERTING in the hitpaw_emulator fixture", default="0.2"
    )


class HitPawEmulatorHandle:
    """What the ``hitpaw_emulator`` fixture returns: addresses, the key, the connection, control helpers."""

    def __init__(self, server: EmulatorServer, conn_id: str = CONN_ID) -> None:
        self.server = server
        self.conn_id = conn_id

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``, the connection's host."""
        return self.server.base_url

    @property
    def api_key(self) -> str:
        """The valid key, the connection's password."""
        return self.server.api_key

    @property
    def connection_json(self) -> str:
        """The Airflow connection in its JSON environment-variable form."""
        return json.dumps({"conn_type": "hitpaw", "host": self.base_url, "password": self.api_key})

    @property
    def control_token(self) -> str:
        """What HTTP requests to ``/_emulator/*`` must send in ``X-Emulator-Token``."""
        return self.server.control_token

    def control_headers(self) -> dict[str, str]:
        """The headers an HTTP request to ``/_emulator/*`` needs (the helpers below need none)."""
        return self.server.control_headers()

    def url(self, path: str) -> str:
        """An absolute URL on the emulator."""
        return self.server.url(path)

    def sample_url(self, name: str = "shoe.jpg") -> str:
        """The URL of a built-in sample image (``shoe.jpg``, ``portrait.png``, ``broken.jpg``, ...)."""
        return self.server.sample_url(name)

    def state(self) -> dict[str, Any]:
        """Coins, jobs, request and fault counters, connection counts (``GET /_emulator/state``)."""
        return self.server.state()

    def set_faults(
        self, rules: Iterable[FaultRule | Mapping[str, Any] | str], seed: int | None = None
    ) -> None:
        """Replace the fault rules (rule objects, their JSON form, or ``--fault`` strings)."""
        self.server.set_faults(rules, seed=seed)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.server.clear_faults()

    def reset(self) -> None:
        """Back to start-up state (the fixture already does this before each test)."""
        self.server.reset()

    def down(self, seconds: float) -> None:
        """Refuse connections for ``seconds``."""
        self.server.down(seconds)

    def up(self) -> None:
        """Listen again now."""
        self.server.up()

    def set_key(self, key: str, state: str = "valid") -> None:
        """Register another key: valid, expired, no_access, or invalid (removes it)."""
        self.server.set_key(key, state)

    def configure(
        self,
        *,
        job_seconds: float | None = None,
        coins: int | None = None,
        result_ttl: float | None = None,
        force_error: bool | None = None,
    ) -> None:
        """Change settings for this test (the next reset restores them)."""
        self.server.configure(
            job_seconds=job_seconds, coins=coins, result_ttl=result_ttl, force_error=force_error
        )

    def expire_job(self, job_id: str) -> bool:
        """Make a job and its files disappear now."""
        return self.server.expire_job(job_id)

    def fail_job(self, job_id: str) -> bool:
        """Make a job end in ERROR."""
        return self.server.fail_job(job_id)

    def finish_job(self, job_id: str) -> bool:
        """End a job's timer now."""
        return self.server.finish_job(job_id)


@pytest.fixture(scope="session")
def hitpaw_emulator_server(pytestconfig: pytest.Config) -> Iterator[EmulatorServer]:
    """One emulator for the whole session (start-up costs ~50 ms, but a per-test one adds up)."""
    from airflow_provider_hitpaw.emulator.runner import EmulatorServer

    job_seconds = float(pytestconfig.getini(_JOB_SECONDS_INI))
    server = EmulatorServer(api_key=f"emu-key-{secrets.token_hex(8)}", job_seconds=job_seconds)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hitpaw_emulator(
    hitpaw_emulator_server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> HitPawEmulatorHandle:
    """A freshly reset emulator, with ``hitpaw_default`` pointing at it for Airflow code under test."""
    hitpaw_emulator_server.reset()
    handle = HitPawEmulatorHandle(hitpaw_emulator_server)
    monkeypatch.setenv(CONN_ENV_VAR, handle.connection_json)
    return handle


@pytest.fixture
def hitpaw_dag_run(hitpaw_emulator: HitPawEmulatorHandle, tmp_path: Any) -> Any:
    """``hitpaw_dag_run(dag_path, dag_id, conf=None, env=None)``: run a DAG of yours with ``airflow dags
    test`` against the ``hitpaw_emulator`` fixture, in a temporary ``AIRFLOW_HOME`` (database migrated,
    DAGs folder set); returns a :class:`~airflow_provider_hitpaw.testing.DagTestRun`."""
    from airflow_provider_hitpaw.testing import DagTestRun, run_dag

    def run(
        dag_path: Any,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> DagTestRun:
        return run_dag(
            dag_path,
            dag_id,
            base_url=hitpaw_emulator.base_url,
            api_key=hitpaw_emulator.api_key,
            conf=conf,
            env=env,
            airflow_home=tmp_path / f"airflow-{dag_id}",
        )

    return run
