"""What a new user meets in the first week, checked the way they would meet it: the CLI's connection
test, the links of a deferring task, the messages that say what to do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from airflow_provider_hitpaw.links import LINKS_XCOM_KEY
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
from tests.conftest import task_context


def _airflow_line() -> tuple[int, int]:
    import airflow

    major, minor = airflow.__version__.split(".")[:2]
    return int(major), int(minor)


def connections_test(tmp_path: Path, connection: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW_CONN_HITPAW_DEFAULT=json.dumps(connection),
    )
    airflow = [sys.executable, "-m", "airflow"]
    subprocess.run([*airflow, "db", "migrate"], env=env, capture_output=True, check=True, timeout=300)
    return subprocess.run(
        [*airflow, "connections", "test", "hitpaw_default"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_airflow_connections_test_says_yes_and_no(hitpaw_emulator: Any, tmp_path: Path) -> None:
    good = connections_test(tmp_path, json.loads(hitpaw_emulator.connection_json))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Connection success!" in good.stdout
    bad = connections_test(
        tmp_path, {"conn_type": "hitpaw", "host": hitpaw_emulator.base_url, "password": "wrong-key-0000"}
    )
    assert "Connection failed!" in bad.stdout
    if _airflow_line() >= (3, 3):
        assert bad.returncode != 0  # 2.11 to 3.2 exit 0 on a failed test (README says so)
    assert "110400000" in bad.stdout
    assert hitpaw_emulator.state()["jobs"] == []  # proving a key costs no coin


def test_connections_test_needs_enabling_on_this_line_as_the_readme_says(tmp_path: Path) -> None:
    """The README once said the command works "on every Airflow line": every line disables it by default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    connection = {"conn_type": "hitpaw", "password": "x", "host": "http://127.0.0.1:9"}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW_CONN_HITPAW_DEFAULT=json.dumps(connection),
    )
    plain = subprocess.run(
        [sys.executable, "-m", "airflow", "connections", "test", "hitpaw_default"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Testing connections is disabled" in plain.stdout + plain.stderr
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert "AIRFLOW__CORE__TEST_CONNECTION=Enabled airflow connections test hitpaw_default" in readme


@pytest.mark.parametrize("source", ["file_url", "source_path"])
def test_a_wrong_key_fails_the_task_naming_the_connection_and_that_no_coin_was_spent(
    hitpaw_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    """A wrong key once failed the task as "HitPaw (HTTP 401): Unauthorized", naming nothing to fix."""
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_hitpaw.emulator.imaging import sample_images

    connection = {"conn_type": "hitpaw", "host": hitpaw_emulator.base_url, "password": "wrong-key-0000"}
    monkeypatch.setenv("AIRFLOW_CONN_HITPAW_DEFAULT", json.dumps(connection))
    if source == "file_url":
        given: dict[str, Any] = {"file_url": hitpaw_emulator.sample_url("shoe.jpg")}
    else:
        (tmp_path / "shoe.jpg").write_bytes(sample_images()["shoe.jpg"].data)
        given = {"source_path": str(tmp_path / "shoe.jpg")}
    with pytest.raises(AirflowFailException) as raised:
        SegmentImageOperator(task_id="t", deferrable=False, **given).execute(task_context())
    message = str(raised.value)
    assert "connection 'hitpaw_default'" in message
    assert "refused the API key" in message
    assert "no coin was spent" in message
    assert "wrong-key-0000" not in message
    assert hitpaw_emulator.state()["jobs"] == []


def test_a_deferring_task_leaves_its_links_a_value(hitpaw_emulator: Any) -> None:
    """The links are resolved when the deferring try ends: they once found no XCom and logged an error."""
    context = task_context()
    with pytest.raises(TaskDeferred):
        SegmentImageOperator(task_id="t", file_url=hitpaw_emulator.sample_url("shoe.jpg")).execute(context)
    assert context["ti"].xcom[LINKS_XCOM_KEY] == {"cutout": "", "mask": ""}


@pytest.mark.parametrize(
    ("file_url", "hint"),
    [
        ("s3://catalogue/raw/shoe.jpg", "source_path"),
        ("/data/raw/shoe.jpg", "source_path"),
        ("https://intranet.corp.local/shoe.jpg", "source_path"),
    ],
)
def test_an_input_hitpaw_cannot_fetch_is_refused_pointing_to_source_path(
    monkeypatch: pytest.MonkeyPatch, file_url: str, hint: str
) -> None:
    """Against the real service (a public base URL), before a coin is spent."""
    monkeypatch.setenv("AIRFLOW_CONN_HITPAW_DEFAULT", json.dumps({"conn_type": "hitpaw", "password": "k"}))
    from airflow.providers.common.compat.sdk import AirflowFailException

    with pytest.raises(AirflowFailException, match=hint):
        SegmentImageOperator(task_id="t", file_url=file_url).execute(task_context())


def test_a_job_that_ended_in_error_names_its_input_and_the_likely_causes(hitpaw_emulator: Any) -> None:
    from airflow_provider_hitpaw.exceptions import HitPawJobFailedError

    url = hitpaw_emulator.sample_url("broken.jpg")
    with pytest.raises(HitPawJobFailedError) as raised:
        SegmentImageOperator(task_id="t", file_url=url, deferrable=False, poll_interval=1).execute(
            task_context()
        )
    message = str(raised.value)
    assert url in message
    assert "source_path" in message
    assert not message.startswith("HitPaw: HitPaw")  # it once said "HitPaw: HitPaw job ..."
