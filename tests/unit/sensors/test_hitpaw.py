from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_hitpaw._api import TaskStatus
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawInvalidRequestError,
    HitPawServerError,
)
from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger
from tests.conftest import SECRET_KEY
from tests.unit.fakes import TIMED_OUT, FakeStateStore, task_context

JOB = "job-1"
CONVERTING = TaskStatus(job_id=JOB, status="CONVERTING", original_url="http://h/a.jpg")
COMPLETED = TaskStatus(
    job_id=JOB,
    status="COMPLETED",
    res_url="http://h/r.png",
    mask_url="http://h/m.png",
    original_url="http://h/a.jpg",
)
ERROR = TaskStatus(job_id=JOB, status="ERROR", original_url="http://h/a.jpg")


@pytest.fixture
def sensor(fake_hook: Any, mocker: Any) -> SegmentationSensor:
    sensor = SegmentationSensor(task_id="wait", job_id=JOB, poll_interval=2, timeout=600)
    mocker.patch.object(SegmentationSensor, "_hook", return_value=fake_hook)
    return sensor


def success_event(**overrides: Any) -> dict[str, Any]:
    return {
        "status": "success",
        "job_id": JOB,
        "message": "done",
        "job_status": "COMPLETED",
        "res_url": "http://h/r.png",
        "mask_url": "http://h/m.png",
        "original_url": "http://h/a.jpg",
        **overrides,
    }


def test_defers_to_the_trigger_with_the_deadline_of_the_first_start(
    sensor: SegmentationSensor, fake_hook: Any
) -> None:
    fake_hook.get_task_status.return_value = CONVERTING
    started = time.time() - 100
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context(started_at=started))
    trigger = deferred.value.trigger
    assert isinstance(trigger, SegmentationTrigger)
    assert trigger.serialize()[1] == {
        "job_id": JOB,
        "hitpaw_conn_id": "hitpaw_default",
        "poll_interval": 2.0,
        "end_time": pytest.approx(started + 600),
        "not_before": None,
    }
    assert deferred.value.method_name == "execute_complete"
    # Airflow's own backstop lies a little after the trigger's deadline, never before it.
    assert deferred.value.timeout is not None
    assert timedelta(seconds=499) < deferred.value.timeout <= timedelta(seconds=560)
    fake_hook.get_task_status.assert_called_once_with(JOB)


def test_a_retry_keeps_the_first_start_where_airflow_can_remember(
    sensor: SegmentationSensor, fake_hook: Any
) -> None:
    fake_hook.get_task_status.return_value = CONVERTING
    store = FakeStateStore()
    first_start = time.time() - 500
    with pytest.raises(TaskDeferred):
        sensor.execute(task_context(started_at=first_start, store=store))
    # The second try starts much later; its deadline is still the first try's.
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context(started_at=time.time(), store=store))
    assert deferred.value.trigger.end_time == pytest.approx(first_start + 600)


def test_without_a_store_a_retry_counts_from_its_own_start_and_says_so(
    fake_hook: Any, mocker: Any, log_text: Any
) -> None:
    """Airflow 2.11 and 3.0 to 3.2 keep nothing across tries: the weaker guarantee is logged, not hidden."""
    fake_hook.get_task_status.return_value = CONVERTING
    mocker.patch.object(SegmentationSensor, "_hook", return_value=fake_hook)
    sensor = SegmentationSensor(task_id="wait", job_id=JOB, poll_interval=5, timeout=600, retries=2)
    now = time.time()
    with pytest.raises(TaskDeferred):
        sensor.execute(task_context(started_at=now - 500, max_tries=2, try_number=1))
    assert "counts from this retry's start" not in log_text()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context(started_at=now, max_tries=2, try_number=2))
    assert deferred.value.trigger.end_time == pytest.approx(now + 600)
    assert "counts from this retry's start, not from the first try's" in log_text()


def test_clearing_the_sensor_restarts_the_clock(sensor: SegmentationSensor, fake_hook: Any) -> None:
    fake_hook.get_task_status.return_value = CONVERTING
    store = FakeStateStore()
    with pytest.raises(TaskDeferred):
        sensor.execute(task_context(started_at=time.time() - 5000, store=store, max_tries=1))
    now = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context(started_at=now, store=store, max_tries=3))
    assert deferred.value.trigger.end_time == pytest.approx(now + 600)


def test_done_at_the_first_look_needs_no_trigger(sensor: SegmentationSensor, fake_hook: Any) -> None:
    fake_hook.get_task_status.return_value = COMPLETED
    assert sensor.execute(task_context(started_at=time.time())) == COMPLETED.to_dict()


def test_job_error_at_the_first_look_fails_without_retry(sensor: SegmentationSensor, fake_hook: Any) -> None:
    fake_hook.get_task_status.return_value = ERROR
    with pytest.raises(AirflowFailException, match="ERROR"):
        sensor.execute(task_context(started_at=time.time()))


def test_transient_fault_at_the_first_look_still_defers(sensor: SegmentationSensor, fake_hook: Any) -> None:
    fake_hook.get_task_status.side_effect = HitPawServerError("down", code=100500000, http_status=500)
    with pytest.raises(TaskDeferred):
        sensor.execute(task_context(started_at=time.time()))


def test_permanent_fault_fails_without_retry(sensor: SegmentationSensor, fake_hook: Any) -> None:
    fake_hook.get_task_status.side_effect = HitPawAuthenticationError(
        "api_key is not valid", code=110400000, http_status=400
    )
    with pytest.raises(AirflowFailException, match="110400000"):
        sensor.execute(task_context(started_at=time.time()))


@pytest.mark.parametrize("job_id", ["", "   ", None], ids=["empty", "blank", "none"])
def test_bad_job_id_fails_before_any_request(job_id: Any, fake_hook: Any, mocker: Any) -> None:
    mocker.patch.object(SegmentationSensor, "_hook", return_value=fake_hook)
    sensor = SegmentationSensor(task_id="wait", job_id=job_id)
    with pytest.raises(AirflowFailException, match="job_id"):
        sensor.execute(task_context(started_at=time.time()))
    fake_hook.get_task_status.assert_not_called()


def test_poll_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        SegmentationSensor(task_id="wait", job_id=JOB, poll_interval=0)


class TestExecuteComplete:
    def test_success_returns_the_status_fields(self, sensor: SegmentationSensor) -> None:
        result = sensor.execute_complete(task_context(), success_event())
        assert result == COMPLETED.to_dict()

    def test_job_error_fails_without_retry(self, sensor: SegmentationSensor) -> None:
        event = success_event(status="error", job_status="ERROR", message="job ended with status ERROR")
        with pytest.raises(AirflowFailException, match="ERROR"):
            sensor.execute_complete(task_context(), event)

    def test_api_error_keeps_hitpaw_code_and_message(self, sensor: SegmentationSensor) -> None:
        event = success_event(
            status="error",
            job_status=None,
            message="The coins are not enough",
            code=110402000,
            http_status=402,
        )
        with pytest.raises(AirflowFailException, match=r"110402000.*coins are not enough"):
            sensor.execute_complete(task_context(), event)

    def test_timeout(self, sensor: SegmentationSensor) -> None:
        with pytest.raises(AirflowSensorTimeout):
            sensor.execute_complete(task_context(), success_event(status="timeout", job_status="CONVERTING"))

    def test_timeout_with_soft_fail_skips(self, fake_hook: Any) -> None:
        sensor = SegmentationSensor(task_id="wait", job_id=JOB, soft_fail=True)
        with pytest.raises(AirflowSkipException):
            sensor.execute_complete(task_context(), success_event(status="timeout", job_status="CONVERTING"))

    @pytest.mark.parametrize(
        "event",
        [None, {}, {"status": "weird"}, "success", ["success"]],
        ids=["missing", "empty", "unknown-status", "string", "list"],
    )
    def test_missing_or_unknown_event_raises(self, sensor: SegmentationSensor, event: Any) -> None:
        with pytest.raises(AirflowException):
            sensor.execute_complete(task_context(), event)


class TestClassicSensor:
    def test_poke_mode_waits_in_the_worker(self, fake_hook: Any, mocker: Any) -> None:
        mocker.patch.object(SegmentationSensor, "_hook", return_value=fake_hook)
        fake_hook.get_task_status.side_effect = [CONVERTING, CONVERTING, COMPLETED]
        sensor = SegmentationSensor(
            task_id="wait",
            job_id=JOB,
            deferrable=False,
            mode="poke",
            poll_interval=1,
            poke_interval=0.01,
            timeout=30,
        )
        result = sensor.execute(task_context(started_at=time.time()))
        assert result == COMPLETED.to_dict()
        assert fake_hook.get_task_status.call_count == 3

    def test_poke_reports_progress_faults_and_end(self, sensor: SegmentationSensor, fake_hook: Any) -> None:
        fake_hook.get_task_status.side_effect = [
            CONVERTING,
            HitPawServerError("busy", http_status=503),
            COMPLETED,
        ]
        assert sensor.poke(task_context()) is False
        assert sensor.poke(task_context()) is False
        done = sensor.poke(task_context())
        assert not isinstance(done, bool)
        assert done.is_done
        assert done.xcom_value == COMPLETED.to_dict()

    def test_reschedule_mode_is_accepted(self) -> None:
        sensor = SegmentationSensor(task_id="wait", job_id=JOB, deferrable=False, mode="reschedule")
        assert sensor.reschedule


def test_no_secret_in_results_logs_or_errors(
    sensor: SegmentationSensor, fake_hook: Any, log_text: Any, hitpaw_conn: str
) -> None:
    fake_hook.get_task_status.return_value = CONVERTING
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(task_context(started_at=time.time()))
    assert SECRET_KEY not in repr(deferred.value.trigger.serialize())
    assert SECRET_KEY not in repr(sensor.execute_complete(task_context(), success_event()))
    assert SECRET_KEY not in log_text()


@pytest.mark.parametrize("timeout", [0, -1, timedelta(0)])
def test_a_timeout_that_leaves_no_wait_is_refused_when_the_dag_is_parsed(timeout: float | timedelta) -> None:
    with pytest.raises(ValueError, match="timeout: must be more than 0 seconds"):
        SegmentationSensor(task_id="w", job_id=JOB, timeout=timeout)


@pytest.mark.parametrize("timeout", [1e15, float("inf"), 9 * 24 * 3600])
def test_a_timeout_beyond_what_hitpaw_keeps_is_refused_when_the_dag_is_parsed(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        SegmentationSensor(task_id="w", job_id=JOB, timeout=timeout)


# --- a deferral that Airflow ends itself ----------------------------------------------------------------


class TestDeferralEndedByAirflow:
    def test_the_sensor_times_out_saying_what_to_check(self) -> None:
        sensor = SegmentationSensor(task_id="w", job_id=JOB)
        with pytest.raises(AirflowSensorTimeout, match="airflow triggerer"):
            sensor.resume_execution("__fail__", TIMED_OUT, task_context())


# --- results already in output_path under overwrite="fail" --------------------------------------------


def test_fail_refuses_existing_results_at_the_first_look_not_after_the_wait(
    fake_hook: Any, mocker: Any, tmp_path: Any
) -> None:
    from airflow_provider_hitpaw.storage import result_names

    mocker.patch.object(SegmentationSensor, "_hook", return_value=fake_hook)
    fake_hook.get_task_status.return_value = CONVERTING
    (tmp_path / result_names("http://h/a.jpg")[1]).write_bytes(b"an earlier run's mask")
    sensor = SegmentationSensor(task_id="w", job_id=JOB, output_path=str(tmp_path), overwrite="fail")
    with pytest.raises(AirflowFailException, match="already exists"):
        sensor.execute(task_context(started_at=time.time()))


# --- storage that fails once the job completed ---------------------------------------------------------


def test_a_storage_failure_says_which_job_completed_and_where_its_results_are(
    fake_hook: Any, mocker: Any, tmp_path: Any
) -> None:
    from airflow_provider_hitpaw import storage
    from airflow_provider_hitpaw.exceptions import HitPawStorageError

    mocker.patch.object(SegmentationSensor, "_hook", return_value=fake_hook)
    mocker.patch.object(storage, "persist_job_results", side_effect=FileNotFoundError("bucket is gone"))
    sensor = SegmentationSensor(task_id="w", job_id=JOB, output_path=str(tmp_path))
    event = success_event(res_url="http://h/r.png?sig=SIGNED-SECRET")
    with pytest.raises(AirflowFailException, match=f"job {JOB!r} completed") as raised:
        sensor.execute_complete(task_context(), event)
    assert isinstance(raised.value.__cause__, HitPawStorageError)
    assert "res_url http://h/r.png" in str(raised.value)
    assert "SIGNED-SECRET" not in str(raised.value)


# --- a job that is another image's ---------------------------------------------------------------------


def test_given_the_submitted_url_a_job_of_another_image_is_refused(fake_hook: Any, mocker: Any) -> None:
    from airflow_provider_hitpaw.exceptions import HitPawUntrustedAnswerError

    mocker.patch.object(SegmentationSensor, "_hook", return_value=fake_hook)
    sensor = SegmentationSensor(task_id="w", job_id=JOB, file_url="http://h/b.jpg")
    with pytest.raises(AirflowFailException, match="one job cannot be two images") as raised:
        sensor.execute_complete(task_context(), success_event())
    assert isinstance(raised.value.__cause__, HitPawUntrustedAnswerError)
    assert (
        SegmentationSensor(task_id="w", job_id=JOB, file_url="http://h/a.jpg").execute_complete(
            task_context(), success_event()
        )
        == COMPLETED.to_dict()
    )


def test_given_only_the_job_id_the_sensor_says_it_cannot_check(
    sensor: SegmentationSensor, log_text: Any
) -> None:
    assert sensor.execute_complete(task_context(), success_event()) == COMPLETED.to_dict()
    assert "the sensor cannot check which image it segmented" in log_text()


def test_file_url_is_templated() -> None:
    assert "file_url" in SegmentationSensor.template_fields


# --- a poll that failed is not a job that failed -------------------------------------------------------


def test_a_poll_that_failed_for_good_fails_the_try_with_retries(sensor: SegmentationSensor) -> None:
    """A gateway's bare 404 once failed the sensor for good, while the job went on."""
    event = success_event(
        status="error",
        job_status="CONVERTING",
        message="polling HitPaw job 'job-1' failed (HitPawInvalidRequestError: (HTTP 404) Not Found)",
        error_type="HitPawInvalidRequestError",
        http_status=404,
        unreadable=True,
    )
    with pytest.raises(HitPawInvalidRequestError, match="HTTP 404"):
        sensor.execute_complete(task_context(), event)


def test_a_poke_whose_poll_failed_for_good_fails_the_try_with_retries(
    sensor: SegmentationSensor, fake_hook: Any
) -> None:
    fake_hook.get_task_status.side_effect = HitPawInvalidRequestError("Not Found", http_status=404)
    with pytest.raises(HitPawInvalidRequestError, match="the job itself has not failed"):
        sensor.execute(task_context(started_at=time.time()))


def test_hitpaw_saying_the_job_is_unknown_still_fails_for_good(
    sensor: SegmentationSensor, fake_hook: Any
) -> None:
    fake_hook.get_task_status.side_effect = HitPawInvalidRequestError(
        "Bad Request", code=100400002, http_status=400
    )
    with pytest.raises(AirflowFailException, match="100400002"):
        sensor.execute(task_context(started_at=time.time()))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"file_url": "https://h.test/raw/a.jpg"}, "input_root"),
        ({"input_root": "https://h.test/raw/"}, "file_url"),
    ],
)
def test_mirrored_folders_need_the_image_and_its_root_when_the_dag_is_parsed(
    kwargs: dict[str, Any], field: str
) -> None:
    """Folders are named after the image the DAG submitted, never after what an answer says it was."""
    with pytest.raises(HitPawConfigurationError, match=field):
        SegmentationSensor(task_id="w", job_id=JOB, output_path="/data/out", output_layout="mirror", **kwargs)
