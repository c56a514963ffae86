"""Bad input is refused before anything is sent, naming the field at fault, and without task retries.

Two moments, said in each test's name:

* at DAG parse time (constructor arguments): a ``ValueError`` (``HitPawConfigurationError`` is one), so
  the DAG does not load;
* at run time (templated fields, the connection): ``AirflowFailException``, which skips the task's
  remaining retries (they would fail the same way).

Every test patches ``requests.Session.post`` and asserts it was never called.

A cross-cutting file, named for no single module on purpose: it holds one promise to the user across
``SegmentImageOperator``, ``SegmentationSensor`` and ``SegmentationTrigger``, for the checks of
``validation.py``, the connection's of ``_settings.py`` and the failure ``_failures.py`` turns them into.
Its tables (``PARSE_TIME``, ``BAD_CONNECTIONS``) put the three classes side by side so that they are seen
to refuse alike; split per module, nothing would show that. The checks themselves, value by value, are in
``test_validation.py`` and ``test_settings.py``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import DAG, AirflowException, AirflowFailException

from airflow_provider_hitpaw.exceptions import HitPawConfigurationError
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger
from tests.conftest import SECRET_KEY
from tests.unit.fakes import task_context

GOOD_URL = "https://cdn.example.test/shoe.jpg"


@pytest.fixture(autouse=True)
def http_post(mocker: Any) -> Any:
    """The synchronous hook's HTTP layer; no test here may reach it."""
    import requests

    return mocker.patch.object(requests.Session, "post", side_effect=AssertionError("a request was sent"))


def _fails_at_run_time(run: Any, field: str) -> AirflowFailException:
    with pytest.raises(AirflowFailException) as raised:
        run()
    assert field in str(raised.value), str(raised.value)
    cause = raised.value.__cause__
    assert isinstance(cause, HitPawConfigurationError)
    assert cause.field == field
    return raised.value


# --- file_url, checked when the task runs (it is templated) --------------------------------------------

BAD_URLS = [
    pytest.param("", id="empty"),
    pytest.param("   \t ", id="blank"),
    pytest.param("cdn.example.test/shoe.jpg", id="no-scheme"),
    pytest.param("/images/shoe.jpg", id="relative-path"),
    pytest.param("ftp://cdn.example.test/shoe.jpg", id="ftp"),
    pytest.param("file:///tmp/shoe.jpg", id="file"),
    pytest.param("javascript:alert(1)", id="javascript"),
    pytest.param("https:///shoe.jpg", id="no-host"),
    pytest.param("https://cdn.example.test/" + "a" * 2048 + ".jpg", id="longer-than-2048"),
    pytest.param("https://cdn.example.test/anim.gif", id="gif"),
    pytest.param("https://cdn.example.test/scan.TIFF", id="tiff"),
    pytest.param("https://cdn.example.test/doc.pdf?x=1", id="pdf"),
    pytest.param("https://cdn.example.test/shoe 1.jpg", id="white-space"),
    pytest.param(42, id="not-a-string"),
]


@pytest.mark.parametrize("file_url", BAD_URLS)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "in-worker"])
def test_operator_refuses_file_url_at_run_time(
    hitpaw_conn: str, http_post: Any, file_url: Any, deferrable: bool
) -> None:
    operator = SegmentImageOperator(task_id="segment", file_url=file_url, deferrable=deferrable)
    _fails_at_run_time(lambda: operator.execute(task_context()), "file_url")
    http_post.assert_not_called()


def test_a_good_url_does_reach_the_http_layer(hitpaw_conn: str, http_post: Any) -> None:
    """The other side of every case above: the patched layer is the one a submission goes through."""
    operator = SegmentImageOperator(task_id="segment", file_url=GOOD_URL, deferrable=False)
    with pytest.raises(Exception, match="a request was sent"):
        operator.execute(task_context())
    http_post.assert_called_once()
    assert http_post.call_args.kwargs["json"] == {"file_url": GOOD_URL}


def test_template_that_renders_to_nothing_fails_at_run_time(hitpaw_conn: str, http_post: Any) -> None:
    with DAG(dag_id="bad_input_template", schedule=None, params={"image": ""}) as dag:
        operator = SegmentImageOperator(task_id="segment", file_url="{{ params.image }}")
    context: Any = {**task_context(), "params": dag.params}
    operator.render_template_fields(context)
    assert operator.file_url == ""  # Jinja really ran
    failure = _fails_at_run_time(lambda: operator.execute(context), "file_url")
    assert "template" in str(failure)
    http_post.assert_not_called()


# --- job_id, checked when the sensor runs (it is templated) --------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    [
        pytest.param("", id="empty"),
        pytest.param("  ", id="blank"),
        pytest.param(12345, id="integer"),
        pytest.param(None, id="none"),
        pytest.param({"job_id": "x"}, id="dict-not-pulled-apart"),
    ],
)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "poke"])
def test_sensor_refuses_job_id_at_run_time(
    hitpaw_conn: str, http_post: Any, job_id: Any, deferrable: bool
) -> None:
    sensor = SegmentationSensor(task_id="wait", job_id=job_id, deferrable=deferrable, timeout=5)
    _fails_at_run_time(lambda: sensor.execute(task_context()), "job_id")
    http_post.assert_not_called()


# --- constructor arguments, refused at DAG parse time ---------------------------------------------------

PARSE_TIME = [
    pytest.param(
        lambda: SegmentImageOperator(task_id="t", file_url=None),
        "file_url",
        id="operator-no-file_url-nor-source_path",
    ),
    pytest.param(
        lambda: SegmentImageOperator(task_id="t", file_url="https://h/a.jpg", source_path="/data/a.jpg"),
        "file_url",
        id="operator-both-file_url-and-source_path",
    ),
    pytest.param(
        lambda: SegmentImageOperator(task_id="t", file_url="https://h/a.jpg", overwrite="sometimes"),
        "overwrite",
        id="operator-unknown-overwrite-policy",
    ),
    pytest.param(
        lambda: SegmentImageOperator(
            task_id="t", file_url="https://h/a.jpg", output_path="/out", wait_for_completion=False
        ),
        "output_path",
        id="operator-output-without-waiting",
    ),
    pytest.param(
        lambda: SegmentImageOperator(task_id="t", file_url=GOOD_URL, poll_interval=0),
        "poll_interval",
        id="operator-poll_interval-0",
    ),
    pytest.param(
        lambda: SegmentImageOperator(task_id="t", file_url=GOOD_URL, poll_interval=-2),
        "poll_interval",
        id="operator-poll_interval-negative",
    ),
    pytest.param(
        lambda: SegmentImageOperator(task_id="t", file_url=GOOD_URL, poll_interval=float("nan")),
        "poll_interval",
        id="operator-poll_interval-nan",
    ),
    pytest.param(
        lambda: SegmentationSensor(task_id="t", job_id="j", poll_interval=0),
        "poll_interval",
        id="sensor-poll_interval-0",
    ),
    pytest.param(
        lambda: SegmentationSensor(task_id="t", job_id="j", poll_interval=-1),
        "poll_interval",
        id="sensor-poll_interval-negative",
    ),
    pytest.param(
        lambda: SegmentationTrigger("j", "hitpaw_default", 0, time.time() + 60),
        "poll_interval",
        id="trigger-poll_interval-0",
    ),
    pytest.param(
        lambda: SegmentationTrigger("j", "hitpaw_default", -5, time.time() + 60),
        "poll_interval",
        id="trigger-poll_interval-negative",
    ),
    pytest.param(
        lambda: SegmentImageOperator(task_id="t", file_url=GOOD_URL, timeout=-1),
        "timeout",
        id="operator-timeout-negative",
    ),
    pytest.param(
        lambda: SegmentationTrigger("", "hitpaw_default", 3, time.time() + 60),
        "job_id",
        id="trigger-job_id-empty",
    ),
]


@pytest.mark.parametrize(("build", "field"), PARSE_TIME)
def test_refused_at_dag_parse_time_with_value_error(http_post: Any, build: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field) as raised:
        build()
    assert isinstance(raised.value, HitPawConfigurationError)
    assert raised.value.field == field
    http_post.assert_not_called()


def test_sensor_negative_timeout_refused_at_dag_parse_time(http_post: Any) -> None:
    # Airflow's own check (BaseSensorOperator): a ValueError on 3.x, an AirflowException on 2.11.
    with pytest.raises((ValueError, AirflowException), match="timeout"):
        SegmentationSensor(task_id="t", job_id="j", timeout=-1)
    http_post.assert_not_called()


# --- the connection, read when the task runs ------------------------------------------------------------

BAD_CONNECTIONS = [
    pytest.param({"host": "http://127.0.0.1:8090"}, "password (API key)", id="no-key"),
    pytest.param({"host": "http://127.0.0.1:8090", "password": "   "}, "password (API key)", id="blank-key"),
    pytest.param(
        {"host": "127.0.0.1:8090/api", "password": SECRET_KEY},
        "host (base URL)",
        id="base-url-without-scheme",
    ),
    pytest.param(
        {"host": "ftp://127.0.0.1:8090", "password": SECRET_KEY}, "host (base URL)", id="base-url-ftp"
    ),
    pytest.param(
        {"host": "http://10.1.2.3:8090", "password": SECRET_KEY}, "host (base URL)", id="http-to-remote-host"
    ),
    pytest.param(
        {"host": "https://127.0.0.1:8090", "password": SECRET_KEY, "extra": {"ca_bundle": "/no/such/ca.pem"}},
        "extra.ca_bundle",
        id="missing-ca-bundle",
    ),
]


def _set_connection(monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any]) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_HITPAW_BAD", json.dumps({"conn_type": "hitpaw", **fields}))
    return "hitpaw_bad"


@pytest.mark.parametrize(("fields", "field"), BAD_CONNECTIONS)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferrable", "in-worker"])
def test_operator_refuses_the_connection_at_run_time(
    monkeypatch: pytest.MonkeyPatch, http_post: Any, fields: dict[str, Any], field: str, deferrable: bool
) -> None:
    conn_id = _set_connection(monkeypatch, fields)
    operator = SegmentImageOperator(
        task_id="segment", file_url=GOOD_URL, hitpaw_conn_id=conn_id, deferrable=deferrable
    )
    failure = _fails_at_run_time(lambda: operator.execute(task_context()), field)
    assert SECRET_KEY not in str(failure)
    http_post.assert_not_called()


@pytest.mark.parametrize(("fields", "field"), BAD_CONNECTIONS)
def test_sensor_refuses_the_connection_at_run_time(
    monkeypatch: pytest.MonkeyPatch, http_post: Any, fields: dict[str, Any], field: str
) -> None:
    conn_id = _set_connection(monkeypatch, fields)
    sensor = SegmentationSensor(task_id="wait", job_id="job-1", hitpaw_conn_id=conn_id, timeout=5)
    _fails_at_run_time(lambda: sensor.execute(task_context()), field)
    http_post.assert_not_called()


@pytest.mark.parametrize(("fields", "field"), [p for p in BAD_CONNECTIONS if p.id != "missing-ca-bundle"])
async def test_trigger_reports_the_connection_in_one_error_event(
    monkeypatch: pytest.MonkeyPatch, mocker: Any, fields: dict[str, Any], field: str
) -> None:
    import aiohttp

    client_post = mocker.patch.object(aiohttp.ClientSession, "post")
    conn_id = _set_connection(monkeypatch, fields)
    trigger = SegmentationTrigger("job-1", conn_id, 0.01, time.time() + 30)
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1
    assert events[0]["status"] == "error"
    assert field in events[0]["message"]
    client_post.assert_not_called()
