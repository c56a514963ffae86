"""The triggers of ``triggers/hitpaw.py``, against scripted aiohttp answers: ``SegmentationTrigger`` (one
job), then ``SegmentationBatchTrigger`` (many jobs, polled in one trigger).

The connection still comes from the environment; only the hook's aiohttp client is replaced.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_hitpaw._events import ErrorInfo, JobEvent
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationBatchTrigger, SegmentationTrigger
from tests.conftest import SECRET_KEY
from tests.unit.fakes import Answer, FakeAsyncClient, TimedClient, envelope, status_body

JOB = "job-1"


def make_trigger(end_in: float = 60.0, poll_interval: float = 0.01) -> SegmentationTrigger:
    return SegmentationTrigger(
        job_id=JOB,
        hitpaw_conn_id="hitpaw_default",
        poll_interval=poll_interval,
        end_time=time.time() + end_in,
    )


@pytest.fixture
def fake_client(hitpaw_conn: str, no_sleep: list[float], monkeypatch: pytest.MonkeyPatch) -> FakeAsyncClient:
    """Every trigger's hook talks to this client; the connection still comes from the environment."""
    client = FakeAsyncClient()
    real_make_hook = SegmentationTrigger._make_hook

    def make_hook(self: SegmentationTrigger) -> HitPawAsyncHook:
        hook = real_make_hook(self)
        hook._client = client  # type: ignore[assignment]
        return hook

    monkeypatch.setattr(SegmentationTrigger, "_make_hook", make_hook)
    return client


async def collect(trigger: SegmentationTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def test_serialize_round_trips_every_argument_and_no_secret() -> None:
    trigger = make_trigger()
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_hitpaw.triggers.hitpaw.SegmentationTrigger"
    assert kwargs == {
        "job_id": JOB,
        "hitpaw_conn_id": "hitpaw_default",
        "poll_interval": 0.01,
        "end_time": trigger.end_time,
        "not_before": None,
    }
    rebuilt = SegmentationTrigger(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert SECRET_KEY not in json.dumps(kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"job_id": ""}, "job_id"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -1}, "poll_interval"),
    ],
    ids=["empty-job-id", "zero-interval", "negative-interval"],
)
def test_bad_arguments_name_the_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {
        "job_id": JOB,
        "hitpaw_conn_id": "c",
        "poll_interval": 1,
        "end_time": 0,
        **kwargs,
    }
    with pytest.raises(ValueError, match=field):
        SegmentationTrigger(**arguments)  # type: ignore[arg-type]


async def test_success_after_converting(fake_client: FakeAsyncClient) -> None:
    fake_client.answers = [Answer(body=status_body(JOB, "CONVERTING"))] * 2 + [
        Answer(body=status_body(JOB, "COMPLETED"))
    ]
    events = await collect(make_trigger())
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    assert payload["job_status"] == "COMPLETED"
    assert payload["job_id"] == JOB
    assert payload["res_url"].endswith(f"/results/{JOB}/cutout.png")
    assert payload["mask_url"].endswith(f"/results/{JOB}/mask.png")
    assert payload["original_url"] == "http://127.0.0.1:9/shoe.jpg"
    json.dumps(payload)  # JSON-able, as Airflow stores it
    assert len(fake_client.requests) == 3
    assert fake_client.requests[0] == ("http://127.0.0.1:8090/api/task-status", {"job_id": JOB})
    assert fake_client.closed


async def test_job_error_ends_in_one_error_event(fake_client: FakeAsyncClient) -> None:
    fake_client.answers = [Answer(body=status_body(JOB, "ERROR"))]
    (event,) = await collect(make_trigger())
    assert event.payload["status"] == "error"
    assert event.payload["job_status"] == "ERROR"
    assert "ERROR" in event.payload["message"]
    assert fake_client.closed


async def test_permanent_api_error_ends_at_once_with_hitpaw_code(fake_client: FakeAsyncClient) -> None:
    fake_client.answers = [Answer(status=400, body=envelope(code=110400000, message="api_key is not valid"))]
    (event,) = await collect(make_trigger())
    assert event.payload["status"] == "error"
    assert event.payload["code"] == 110400000
    assert event.payload["http_status"] == 400
    assert "api_key is not valid" in event.payload["message"]
    assert len(fake_client.requests) == 1
    assert SECRET_KEY not in json.dumps(event.payload)


async def test_the_task_reads_the_error_back_and_drops_what_is_not_a_number(
    fake_client: FakeAsyncClient,
) -> None:
    fake_client.answers = [Answer(status=400, body=envelope(code=110400000, message="api_key is not valid"))]
    (event,) = await collect(make_trigger())
    read = JobEvent.from_payload(event.payload)
    assert read.error == ErrorInfo("HitPawAuthenticationError", 110400000, 400)
    odd = {**event.payload, "code": True, "http_status": "400", "error_type": 7}
    assert JobEvent.from_payload(odd).error == ErrorInfo()


async def test_timeout_when_the_deadline_passes(fake_client: FakeAsyncClient) -> None:
    fake_client.default = Answer(body=status_body(JOB, "CONVERTING"))
    (event,) = await collect(make_trigger(end_in=0.05))
    assert event.payload["status"] == "timeout"
    assert event.payload["job_status"] == "CONVERTING"
    assert fake_client.closed


async def test_deadline_in_the_past_still_polls_once(fake_client: FakeAsyncClient) -> None:
    """A triggerer that comes back after the deadline gives the job one last look before timing out."""
    fake_client.answers = [Answer(body=status_body(JOB, "COMPLETED"))]
    (event,) = await collect(make_trigger(end_in=-10))
    assert event.payload["status"] == "success"


async def test_transient_faults_are_survived(fake_client: FakeAsyncClient, no_sleep: list[float]) -> None:
    import aiohttp

    # More consecutive faults than one call's retries (5), so the trigger itself must poll on.
    faults = [Answer(status=500, body=b"<html>oops</html>")] * 4 + [
        Answer(raises=aiohttp.ClientConnectionError("reset")),
        Answer(
            status=429,
            body=envelope(code=100429000, message="Too Many Requests"),
            headers={"Retry-After": "2"},
        ),
        Answer(status=200, body=b'{"code": 200, "data": {"job_'),
    ]
    fake_client.answers = [*faults, Answer(body=status_body(JOB, "COMPLETED"))]
    (event,) = await collect(make_trigger())
    assert event.payload["status"] == "success"
    assert len(fake_client.requests) == len(faults) + 1
    assert 2 in [round(d) for d in no_sleep if d >= 2], "Retry-After was not honoured"


async def test_unknown_status_is_not_a_failure(fake_client: FakeAsyncClient) -> None:
    fake_client.answers = [
        Answer(body=status_body(JOB, "PAUSED")),
        Answer(body=status_body(JOB, "COMPLETED")),
    ]
    (event,) = await collect(make_trigger())
    assert event.payload["status"] == "success"


async def test_client_closed_on_cancellation(fake_client: FakeAsyncClient) -> None:
    fake_client.default = Answer(body=status_body(JOB, "CONVERTING"))
    trigger = make_trigger(poll_interval=30)

    async def consume() -> None:
        async for _ in trigger.run():
            pytest.fail("no event expected before cancellation")

    task = asyncio.create_task(consume())
    while not fake_client.requests:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake_client.closed
    assert fake_client.close_calls == 1


async def test_logs_status_changes_not_every_poll(fake_client: FakeAsyncClient, log_text: Any) -> None:
    fake_client.answers = [Answer(body=status_body(JOB, "CONVERTING"))] * 5 + [
        Answer(body=status_body(JOB, "COMPLETED"))
    ]
    await collect(make_trigger())
    logs = log_text()
    # Five polls saw CONVERTING and one COMPLETED; a line per poll would log the first five times as often.
    # (A line may show in more than one captured channel, hence the comparison, not a count of 1.)
    assert logs.count("is COMPLETED") >= 1
    assert logs.count("is CONVERTING") == logs.count("is COMPLETED")
    assert SECRET_KEY not in logs


async def test_connection_read_without_blocking_call(
    fake_client: FakeAsyncClient, mocker: pytest.FixtureRequest
) -> None:
    """The connection must come from common.compat's get_async_connection, not a blocking lookup."""
    from airflow.providers.common.compat import connection

    spy = mocker.spy(connection, "get_async_connection")  # type: ignore[attr-defined]
    fake_client.answers = [Answer(body=status_body(JOB, "COMPLETED"))]
    await collect(make_trigger())
    spy.assert_awaited_once()
    assert spy.call_args.args[0] == "hitpaw_default"


async def test_an_early_event_is_held_until_not_before(fake_client: FakeAsyncClient) -> None:
    """A job done within a second of the deferral: the event waits for not_before (Airflow's race)."""
    fake_client.default = Answer(200, status_body(JOB, "COMPLETED"))
    started = time.monotonic()
    trigger = SegmentationTrigger(
        JOB, "hitpaw_default", 1, end_time=time.time() + 60, not_before=time.time() + 1.5
    )
    [event] = await collect(trigger)
    assert event.payload["status"] == "success"
    assert time.monotonic() - started >= 1.4
    assert len(fake_client.requests) == 1  # polled at once; only the event waited


async def test_a_late_event_is_not_held(fake_client: FakeAsyncClient) -> None:
    fake_client.default = Answer(200, status_body(JOB, "COMPLETED"))
    started = time.monotonic()
    trigger = SegmentationTrigger(
        JOB, "hitpaw_default", 1, end_time=time.time() + 60, not_before=time.time() - 5
    )
    await collect(trigger)
    assert time.monotonic() - started < 1


# === SegmentationBatchTrigger ==========================================================================


@pytest.fixture
def client(hitpaw_conn: str, no_sleep: list[float], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every batch trigger's hook talks to the client a test puts in ``holder["client"]``."""
    holder: dict[str, Any] = {}
    real = SegmentationBatchTrigger._make_hook

    def make_hook(self: SegmentationBatchTrigger) -> HitPawAsyncHook:
        hook = real(self)
        hook._client = holder["client"]
        return hook

    monkeypatch.setattr(SegmentationBatchTrigger, "_make_hook", make_hook)
    return holder


def batch_trigger(job_ids: list[str], interval: float = 0.5, end_in: float = 30) -> SegmentationBatchTrigger:
    return SegmentationBatchTrigger(
        job_ids, "hitpaw_default", interval, time.time() + end_in, max_in_flight=4
    )


async def run(t: SegmentationBatchTrigger) -> dict[str, Any]:
    events = [event async for event in t.run()]
    assert len(events) == 1
    return dict(events[0].payload)


def test_serialize_round_trip_without_secret() -> None:
    t = batch_trigger(["a", "b"])
    path, kwargs = t.serialize()
    assert path == "airflow_provider_hitpaw.triggers.hitpaw.SegmentationBatchTrigger"
    assert SegmentationBatchTrigger(**kwargs).serialize() == (path, kwargs)
    assert SECRET_KEY not in json.dumps(kwargs)


async def test_polls_are_spread_over_the_interval(client: dict[str, Any]) -> None:
    jobs = [f"job-{i}" for i in range(10)]
    client["client"] = TimedClient({job: ["CONVERTING", "COMPLETED"] for job in jobs})
    payload = await run(batch_trigger(jobs, interval=0.5))
    assert payload["status"] == "success"
    assert payload["completed"] == 10
    first_round = client["client"].sent_at[:10]
    gaps = [b - a for a, b in itertools.pairwise(first_round)]
    # Ten polls over 0.5 s: about 0.05 s apart, not a burst.
    assert min(gaps) > 0.02
    assert first_round[-1] - first_round[0] > 0.35


async def test_event_stays_small_for_thousands_of_jobs(client: dict[str, Any]) -> None:
    jobs = [f"job-{i:05d}-0123456789abcdef" for i in range(3000)]
    client["client"] = TimedClient({job: ["COMPLETED"] for job in jobs} | {jobs[7]: ["ERROR"]})
    payload = await run(batch_trigger(jobs, interval=0.01))
    assert payload["completed"] == 2999
    assert payload["failed"] == {jobs[7]: "ended with status ERROR"}
    assert len(json.dumps(payload)) < 1000


async def test_timeout_lists_the_open_jobs(client: dict[str, Any]) -> None:
    client["client"] = TimedClient({"a": ["COMPLETED"], "b": ["CONVERTING"]})
    payload = await run(batch_trigger(["a", "b"], interval=0.05, end_in=0.2))
    assert payload["status"] == "timeout"
    assert (payload["completed"], payload["pending"]) == (1, ["b"])


async def test_transient_faults_keep_the_job_open(client: dict[str, Any]) -> None:
    client["client"] = TimedClient({"a": ["HTTP-500"] * 6 + ["COMPLETED"]})
    payload = await run(batch_trigger(["a"], interval=0.05))
    assert payload["status"] == "success"


async def test_a_bad_key_stops_the_batch_with_hitpaw_code(client: dict[str, Any]) -> None:
    client["client"] = TimedClient({"a": ["HTTP-bad-key"], "b": ["HTTP-bad-key"]})
    payload = await run(batch_trigger(["a", "b"], interval=0.05))
    assert payload["status"] == "error"
    assert payload["code"] == 110400000
    assert SECRET_KEY not in json.dumps(payload)


async def test_progress_is_logged_at_a_cadence(client: dict[str, Any], log_text: Any) -> None:
    jobs = [f"job-{i}" for i in range(100)]
    client["client"] = TimedClient(
        {job: ["CONVERTING"] * (i % 5 + 1) + ["COMPLETED"] for i, job in enumerate(jobs)}
    )
    await run(batch_trigger(jobs, interval=0.01))
    progress = [line for line in log_text().splitlines() if " completed, " in line]
    assert any("100/100 completed, 0 failed" in line for line in progress)
    assert len(progress) <= 2 * 12, "a progress line per poll, not per tenth of the batch"
