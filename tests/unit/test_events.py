"""The events' JSON contract between a trigger and the task it resumes: what each writes and reads."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_hitpaw._events import BatchEvent, ErrorInfo, JobEvent, Outcome
from airflow_provider_hitpaw.exceptions import (
    HitPawInvalidRequestError,
    HitPawJobFailedError,
    HitPawResponseError,
)


def test_a_batch_event_carries_its_unreadable_jobs_apart_from_the_failed_ones() -> None:
    event = BatchEvent(
        Outcome.SUCCESS,
        "1 of 3 completed, 1 failed, 1 unreadable",
        completed=1,
        failed={"b": "ended with status ERROR"},
        unreadable={"c": "HitPawInvalidRequestError: HitPaw (HTTP 404): Not Found"},
    )
    payload = json.loads(json.dumps(event.to_payload()))
    assert payload["unreadable"] == {"c": "HitPawInvalidRequestError: HitPaw (HTTP 404): Not Found"}
    assert payload["failed"] == {"b": "ended with status ERROR"}
    assert BatchEvent.from_payload(payload) == event


def test_a_batch_event_of_an_older_trigger_has_no_unreadable_jobs() -> None:
    older = {"status": "success", "message": "", "completed": 2, "failed": {}, "pending": []}
    assert BatchEvent.from_payload(older).unreadable == {}
    assert BatchEvent(Outcome.SUCCESS, "").unreadable == {}


@pytest.mark.parametrize("unreadable", [["c"], "c", 3])
def test_a_batch_event_whose_unreadable_jobs_are_no_mapping_is_refused(unreadable: Any) -> None:
    with pytest.raises(HitPawResponseError, match="malformed"):
        BatchEvent.from_payload({"status": "success", "unreadable": unreadable})


def test_a_job_event_of_an_unreadable_poll_crosses_with_its_real_error() -> None:
    err = HitPawInvalidRequestError("Not Found", http_status=404)
    event = JobEvent.unreadable_poll("job-1", err, "CONVERTING")
    payload = json.loads(json.dumps(event.to_payload()))
    assert payload["unreadable"] is True
    assert (payload["error_type"], payload["http_status"]) == ("HitPawInvalidRequestError", 404)
    read = JobEvent.from_payload(payload)
    assert read.unreadable
    assert read.error == ErrorInfo.of(err)
    failure = read.failure()
    assert isinstance(failure, HitPawInvalidRequestError)
    assert not isinstance(failure, HitPawJobFailedError)
    assert "the job itself has not failed (last seen CONVERTING)" in str(failure)


def test_a_job_event_without_the_flag_is_read_as_before() -> None:
    err = HitPawInvalidRequestError("Not Found", http_status=404)
    payload = JobEvent.failed("job-1", err, "CONVERTING").to_payload()
    assert "unreadable" not in payload
    assert not JobEvent.from_payload(payload).unreadable
    # The flag without an error is no unreadable poll: nothing says what failed.
    assert not JobEvent.from_payload({"status": "error", "job_id": "job-1", "unreadable": True}).unreadable
