"""What reaches Airflow's Stats: the names the README lists, each count as given, and never a failure."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_hitpaw import _metrics


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
