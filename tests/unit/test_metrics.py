"""What reaches Airflow's Stats: the names the README lists, each count as given, and never a failure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_hitpaw import _metrics
from tests.unit.fakes import FakeStateStore, task_context


@pytest.fixture
def stats(mocker: Any) -> Any:
    fake = mocker.MagicMock()
    mocker.patch.object(_metrics, "_stats", return_value=fake)
    return fake


def test_a_submission_counts_the_job_and_its_coins(stats: Any) -> None:
    _metrics.count_submitted(20)
    assert stats.incr.call_args_list == [
        (("hitpaw.jobs_submitted", 1),),
        (("hitpaw.coins_consumed", 20),),
    ]


def test_an_unstated_price_counts_the_job_not_invented_coins(stats: Any) -> None:
    _metrics.count_submitted(None)
    assert stats.incr.call_args_list == [(("hitpaw.jobs_submitted", 1),)]


def test_ends_and_durations(stats: Any) -> None:
    _metrics.count_ended(completed=3, failed=1, durations=[2.5, -1.0])
    assert stats.incr.call_args_list == [(("hitpaw.jobs_completed", 3),), (("hitpaw.jobs_failed", 1),)]
    assert stats.timing.call_args_list == [(("hitpaw.job_duration", timedelta(seconds=2.5)),)]


def test_nothing_is_sent_for_nothing(stats: Any) -> None:
    _metrics.count_reused(0)
    _metrics.count_ended()
    _metrics.count_submitted(20, jobs=0)
    assert not stats.method_calls


def test_a_broken_metrics_backend_never_fails_the_task(stats: Any) -> None:
    stats.incr.side_effect = OSError("statsd is down")
    _metrics.count_submitted(20)
    _metrics.count_reused(2)


def test_the_stats_of_this_airflow_are_reachable() -> None:
    stats = _metrics._stats()
    assert callable(stats.incr)
    assert callable(stats.timing)


@pytest.mark.parametrize(
    ("started", "ended", "expected"), [(100.0, 160.5, 60.5), (None, 1.0, None), (True, 1.0, None)]
)
def test_seconds_since(started: Any, ended: float, expected: float | None) -> None:
    assert _metrics.seconds_since(started, ended) == expected


def test_a_retry_that_finishes_the_same_job_does_not_count_it_again(stats: Any) -> None:
    """On Airflow 3.3 the task state store remembers the end a try counted; a retry finds it."""
    store = FakeStateStore()
    first, retry = task_context(store=store), task_context(store=store, try_number=2)
    _metrics.count_end_once(first, "job-1", True, 4.0)
    _metrics.count_end_once(retry, "job-1", True, 9.0)
    _metrics.count_end_once(retry, "job-2", False)
    assert stats.incr.call_args_list == [(("hitpaw.jobs_completed", 1),), (("hitpaw.jobs_failed", 1),)]
    assert stats.timing.call_count == 1


def test_without_a_store_each_call_counts(stats: Any) -> None:
    """Older lines: a retry there submits a new job, so an end is never seen twice."""
    _metrics.count_end_once(task_context(), "job-1", True)
    _metrics.count_end_once(task_context(), "job-1", True)
    assert stats.incr.call_count == 2


def test_a_sensor_counts_the_end_it_waited_for_once_its_results_are_kept(stats: Any, mocker: Any) -> None:
    from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor

    sensor = SegmentationSensor(task_id="wait", job_id="job-9")
    mocker.patch.object(SegmentationSensor, "_hook")
    event = {
        "status": "success",
        "job_id": "job-9",
        "message": "done",
        "job_status": "COMPLETED",
        "res_url": "https://r/x.png",
        "mask_url": "https://r/m.png",
    }
    sensor.execute_complete(task_context(), event)
    assert stats.incr.call_args_list == [(("hitpaw.jobs_completed", 1),)]
    with pytest.raises(Exception, match="job-9"):
        sensor.execute_complete(
            task_context(), {**event, "status": "error", "job_status": "ERROR", "res_url": None}
        )
    assert stats.incr.call_args_list[-1] == (("hitpaw.jobs_failed", 1),)
