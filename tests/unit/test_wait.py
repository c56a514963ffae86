"""The wait rules, without a server or a clock: one job (JobWatch), many jobs (BatchWatch)."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_hitpaw._api import TaskStatus
from airflow_provider_hitpaw._events import ErrorInfo, Outcome
from airflow_provider_hitpaw._wait import BatchWatch, JobWatch
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawError,
    HitPawInsufficientCoinsError,
    HitPawInvalidRequestError,
    HitPawJobFailedError,
    HitPawServerError,
    HitPawUntrustedAnswerError,
)

log = logging.getLogger("test")


# --- one job --------------------------------------------------------------------------------------


def test_job_watch_ends_on_completed_and_error_only() -> None:
    watch = JobWatch("j", end_time=100.0, poll_interval=3.0, logger=log)
    assert watch.observe(TaskStatus("j", "CONVERTING")) is None
    assert watch.observe(TaskStatus("j", "PAUSED")) is None  # unknown: not a failure
    done = watch.observe(TaskStatus("j", "COMPLETED", res_url="https://r/c.png"))
    assert done is not None
    assert done.outcome is Outcome.SUCCESS
    assert done.res_url == "https://r/c.png"
    failed = JobWatch("j", 100.0, 3.0, log).observe(TaskStatus("j", "ERROR"))
    assert failed is not None
    assert failed.outcome is Outcome.ERROR
    assert failed.error is None


def test_job_watch_polls_on_through_transient_faults_and_stops_on_permanent_ones() -> None:
    watch = JobWatch("j", 100.0, 3.0, log)
    assert watch.fault(HitPawServerError("busy", http_status=503)) is None
    event = watch.fault(HitPawAuthenticationError("bad key", code=110400000, http_status=400))
    assert event is not None
    assert event.error is not None
    assert event.error.error_type == "HitPawAuthenticationError"
    assert event.error.code == 110400000


def test_job_watch_never_pauses_past_the_deadline() -> None:
    watch = JobWatch("j", end_time=100.0, poll_interval=3.0, logger=log)
    assert watch.pause(90.0) == 3.0
    assert watch.pause(99.0) == pytest.approx(1.0)
    assert watch.pause(100.0) is None
    # A poll right at the deadline still gets a second: no time at all would only make a fault.
    assert watch.poll_budget(99.5) == 1.0
    assert watch.poll_budget(40.0) == 60.0


def test_job_watch_logs_changes_and_each_kind_of_fault_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test")
    watch = JobWatch("j", 100.0, 3.0, log)
    for _ in range(3):
        watch.observe(TaskStatus("j", "CONVERTING"))
        watch.fault(HitPawServerError("busy", http_status=503))
        watch.fault(HitPawServerError("busy", http_status=503))
    assert caplog.text.count("is CONVERTING") == 1
    # Each time the status came back, a fault after it is news again.
    assert caplog.text.count("polling on") == 3


# --- many jobs ------------------------------------------------------------------------------------


def test_batch_watch_sorts_each_outcome() -> None:
    watch = BatchWatch(
        ["done", "broken", "busy", "flaky", "gone"], poll_interval=5.0, end_time=100.0, start=0.0
    )
    assert watch.take(10.0, limit=10) == ["done", "broken", "busy", "flaky", "gone"]
    watch.absorb("done", TaskStatus("done", "COMPLETED"), 10.0)
    watch.absorb("broken", TaskStatus("broken", "ERROR"), 10.0)
    watch.absorb("busy", TaskStatus("busy", "CONVERTING"), 10.0)
    watch.absorb("flaky", HitPawServerError("down", http_status=503), 10.0)
    watch.absorb("gone", HitPawInvalidRequestError("Bad Request", code=100400002, http_status=400), 10.0)
    assert watch.completed == 1
    assert watch.failed == {
        "broken": "ended with status ERROR",
        "gone": "HitPaw (code 100400002, HTTP 400): Bad Request",
    }
    assert watch.open_jobs == ["busy", "flaky"]
    assert watch.stopped_by is None
    assert watch.event(10.0) is None


def test_batch_watch_spreads_the_first_polls_over_the_interval() -> None:
    watch = BatchWatch([f"j{i}" for i in range(4)], poll_interval=4.0, end_time=100.0, start=0.0)
    assert watch.take(0.0, limit=10) == ["j0"]
    assert watch.take(2.5, limit=10) == ["j1", "j2"]
    assert watch.next_due() == 3.0


def test_one_slow_job_does_not_stretch_the_others_cadence() -> None:
    """Each job is rescheduled from the start of its own poll: a poll that hangs delays only its job."""
    watch = BatchWatch(["slow", "fast"], poll_interval=3.0, end_time=100.0, start=0.0)
    assert watch.take(1.5, limit=10) == ["slow", "fast"]
    for round_start in (1.5, 4.5, 7.5):
        watch.absorb("fast", TaskStatus("fast", "CONVERTING"), round_start)
        assert watch.take(round_start + 3.0, limit=10) == ["fast"]  # "slow" is still in flight
    watch.absorb("slow", TaskStatus("slow", "CONVERTING"), 1.5)
    assert "slow" in watch.take(10.5, limit=10)


def test_batch_watch_respects_the_limit_and_hands_out_waiting_jobs_first() -> None:
    watch = BatchWatch(["a", "b", "c"], poll_interval=0.001, end_time=100.0, start=0.0)
    assert watch.take(1.0, limit=2) == ["a", "b"]
    assert watch.next_due() == float("-inf")  # c waits for a free slot
    assert watch.take(1.0, limit=2) == ["c"]


def test_batch_watch_stops_on_an_account_problem() -> None:
    bad_key = HitPawAuthenticationError("api_key is not valid", code=110400000, http_status=400)
    watch = BatchWatch(["a", "b"], poll_interval=1.0, end_time=100.0, start=0.0)
    watch.absorb("a", TaskStatus("a", "COMPLETED"), 0.0)
    watch.absorb("b", bad_key, 0.0)
    event = watch.event(1.0)
    assert watch.stopped_by is bad_key
    assert event is not None
    assert event.outcome is Outcome.ERROR
    assert event.error is not None
    assert event.error.code == 110400000
    assert event.pending == ["b"]


def test_batch_watch_times_out_listing_the_open_jobs() -> None:
    watch = BatchWatch(["a", "b", "a"], poll_interval=1.0, end_time=10.0, start=0.0)
    watch.absorb("a", TaskStatus("a", "COMPLETED"), 0.0)
    assert watch.event(9.9) is None
    event = watch.event(10.0)
    assert event is not None
    assert event.outcome is Outcome.TIMEOUT
    assert (event.completed, event.pending, watch.total) == (1, ["b"], 2)


def test_batch_watch_succeeds_when_every_job_ended() -> None:
    watch = BatchWatch(["a", "b"], poll_interval=1.0, end_time=10.0, start=0.0)
    watch.absorb("a", TaskStatus("a", "COMPLETED"), 0.0)
    watch.absorb("b", HitPawInsufficientCoinsError("no coins", code=110402000), 0.0)
    event = watch.event(1.0)
    assert event is not None
    assert event.outcome is Outcome.ERROR  # coins stop the batch


def test_an_outcome_for_a_job_that_already_ended_changes_nothing() -> None:
    watch = BatchWatch(["a"], poll_interval=1.0, end_time=10.0, start=0.0)
    watch.absorb("a", TaskStatus("a", "COMPLETED"), 0.0)
    watch.absorb("a", TaskStatus("a", "ERROR"), 0.0)
    assert (watch.completed, watch.failed) == (1, {})


# --- a poll that failed is not a job that failed -------------------------------------------------------

#: Poll failures that no retry of the poll mends and that say nothing of the job.
UNREADABLE = {
    "bare-404": HitPawInvalidRequestError("Not Found", http_status=404),
    "over-the-cap": HitPawUntrustedAnswerError("the answer is larger than 1 MiB"),
    "undocumented-code": HitPawError("Something", code=123456, http_status=200),
}
JOB_UNKNOWN = HitPawInvalidRequestError("Bad Request", code=100400002, http_status=400)


@pytest.mark.parametrize("err", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_job_watch_an_unreadable_poll_ends_the_wait_without_failing_the_job(err: HitPawError) -> None:
    watch = JobWatch("j", 100.0, 3.0, log)
    watch.observe(TaskStatus("j", "CONVERTING"))
    event = watch.fault(err)
    assert event is not None
    assert event.unreadable
    assert event.job_status == "CONVERTING"
    assert event.error == ErrorInfo.of(err)
    failure = event.failure()
    assert type(failure) is type(err)
    assert (failure.code, failure.http_status) == (err.code, err.http_status)
    assert not isinstance(failure, HitPawJobFailedError)
    assert "the job itself has not failed" in str(failure)
    assert "could not segment" not in str(failure)


def test_job_watch_hitpaw_saying_the_job_is_unknown_still_ends_it() -> None:
    event = JobWatch("j", 100.0, 3.0, log).fault(JOB_UNKNOWN)
    assert event is not None
    assert not event.unreadable
    assert isinstance(event.failure(), HitPawInvalidRequestError)


def test_batch_watch_keeps_unreadable_polls_out_of_failed() -> None:
    """A bare 404 once put a COMPLETED job into failed: reported as "HitPaw could not segment the image"."""
    jobs = [*UNREADABLE, "gone", "done"]
    watch = BatchWatch(jobs, poll_interval=5.0, end_time=100.0, start=0.0)
    assert watch.take(10.0, limit=10) == jobs
    for job, err in UNREADABLE.items():
        watch.absorb(job, err, 10.0)
    watch.absorb("gone", JOB_UNKNOWN, 10.0)
    watch.absorb("done", TaskStatus("done", "COMPLETED"), 10.0)
    assert watch.failed == {"gone": "HitPaw (code 100400002, HTTP 400): Bad Request"}
    assert watch.unreadable == {
        "bare-404": "HitPawInvalidRequestError: HitPaw (HTTP 404): Not Found",
        "over-the-cap": "HitPawUntrustedAnswerError: HitPaw: the answer is larger than 1 MiB",
        "undocumented-code": "HitPawError: HitPaw (code 123456, HTTP 200): Something",
    }
    # Ended at once, not polled again: a fault no retry of the poll mends would repeat to the deadline.
    assert watch.open_jobs == []
    event = watch.event(10.0)
    assert event is not None
    assert event.outcome is Outcome.SUCCESS
    assert (event.completed, event.failed, event.unreadable) == (1, watch.failed, watch.unreadable)
    assert event.message == "1 of 5 completed, 1 failed, 3 unreadable"
    assert event.to_payload()["unreadable"] == watch.unreadable


def test_batch_watch_reports_unreadable_jobs_at_a_deadline_and_a_stop_too() -> None:
    watch = BatchWatch(["a", "b"], poll_interval=1.0, end_time=10.0, start=0.0)
    watch.absorb("a", UNREADABLE["bare-404"], 0.0)
    timed_out = watch.event(10.0)
    assert timed_out is not None
    assert (timed_out.outcome, timed_out.pending, list(timed_out.unreadable)) == (
        Outcome.TIMEOUT,
        ["b"],
        ["a"],
    )
    watch.absorb("b", HitPawAuthenticationError("api_key is not valid", code=110400000), 1.0)
    stopped = watch.event(1.0)
    assert stopped is not None
    assert (stopped.outcome, list(stopped.unreadable)) == (Outcome.ERROR, ["a"])
