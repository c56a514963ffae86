"""The triggers of ``triggers/hitpaw.py``, against scripted aiohttp answers: ``SegmentationTrigger`` (one
job), then ``SegmentationBatchTrigger`` (many jobs, polled in one trigger).

The connection still comes from the environment; only the hook's aiohttp client is replaced. The triggers
run on a :class:`~tests.unit.fakes.VirtualTimeLoop` whose clock is also theirs and their hook's (the
``loop`` fixture): a poll interval, a deadline, a hold or a poll that hangs passes at once and exactly,
when something happened is read off that clock, and no result depends on how busy the machine is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.triggers.base import TriggerEvent

from airflow_provider_hitpaw._events import ErrorInfo, JobEvent
from airflow_provider_hitpaw.hooks import _transport
from airflow_provider_hitpaw.hooks import hitpaw as hooks
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook
from airflow_provider_hitpaw.triggers import hitpaw as triggers
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationBatchTrigger, SegmentationTrigger
from tests.conftest import SECRET_KEY
from tests.unit.fakes import (
    Answer,
    FakeAsyncClient,
    FakeAsyncResponse,
    TimedClient,
    VirtualTimeLoop,
    envelope,
    status_body,
    wait_until,
)

JOB = "job-1"
#: The Unix time at which the clock of every test starts.
START = VirtualTimeLoop.EPOCH


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[VirtualTimeLoop]:
    """The event loop the triggers run on: its clock is theirs and their hook's (a poll's deadline), and
    it moves only while they wait."""
    virtual = VirtualTimeLoop()
    monkeypatch.setattr(triggers, "_now", virtual.wall)
    monkeypatch.setattr(triggers, "_monotonic", virtual.time)
    clock = SimpleNamespace(time=virtual.wall, monotonic=virtual.time, sleep=time.sleep)
    monkeypatch.setattr(hooks, "time", clock)
    monkeypatch.setattr(_transport, "time", clock)
    yield virtual
    virtual.close()


class StalledStream:
    """An answer's body that never comes ("hangs"), or comes a byte a second ("drips": no read waits
    long, the whole takes minutes)."""

    def __init__(self, how: str, body: bytes) -> None:
        self.how = how
        self.body = body

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        if self.how == "hangs":
            await asyncio.get_running_loop().create_future()
        for byte in self.body:
            await asyncio.sleep(1.0)
            yield bytes([byte])


def stall(client: FakeAsyncClient, how: str) -> None:
    """Every answer ``client`` gives from now on stalls as ``how`` says (after its headers)."""
    post = client.post

    def stalled(url: str, json: dict[str, Any], **kwargs: Any) -> Any:
        response = post(url, json, **kwargs)
        response.content = StalledStream(how, status_body(json["job_id"], "COMPLETED"))
        return response

    client.post = stalled  # type: ignore[method-assign]


def make_trigger(end_in: float = 60.0, poll_interval: float = 0.01) -> SegmentationTrigger:
    return SegmentationTrigger(
        job_id=JOB,
        hitpaw_conn_id="hitpaw_default",
        poll_interval=poll_interval,
        end_time=START + end_in,
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


async def collect(trigger: SegmentationTrigger | SegmentationBatchTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


async def timed(trigger: SegmentationTrigger) -> list[tuple[float, TriggerEvent]]:
    """Each event, with when it was fired: seconds on the loop's clock since the test began."""
    clock = asyncio.get_running_loop()
    return [(clock.time(), event) async for event in trigger.run()]


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


def test_success_after_converting(fake_client: FakeAsyncClient, loop: VirtualTimeLoop) -> None:
    fake_client.answers = [Answer(body=status_body(JOB, "CONVERTING"))] * 2 + [
        Answer(body=status_body(JOB, "COMPLETED"))
    ]
    events = loop.run(collect(make_trigger()))
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


def test_job_error_ends_in_one_error_event(fake_client: FakeAsyncClient, loop: VirtualTimeLoop) -> None:
    fake_client.answers = [Answer(body=status_body(JOB, "ERROR"))]
    (event,) = loop.run(collect(make_trigger()))
    assert event.payload["status"] == "error"
    assert event.payload["job_status"] == "ERROR"
    assert "ERROR" in event.payload["message"]
    assert fake_client.closed


def test_permanent_api_error_ends_at_once_with_hitpaw_code(
    fake_client: FakeAsyncClient, loop: VirtualTimeLoop
) -> None:
    fake_client.answers = [Answer(status=400, body=envelope(code=110400000, message="api_key is not valid"))]
    (event,) = loop.run(collect(make_trigger()))
    assert event.payload["status"] == "error"
    assert event.payload["code"] == 110400000
    assert event.payload["http_status"] == 400
    assert "api_key is not valid" in event.payload["message"]
    assert len(fake_client.requests) == 1
    assert SECRET_KEY not in json.dumps(event.payload)


def test_the_task_reads_the_error_back_and_drops_what_is_not_a_number(
    fake_client: FakeAsyncClient, loop: VirtualTimeLoop
) -> None:
    fake_client.answers = [Answer(status=400, body=envelope(code=110400000, message="api_key is not valid"))]
    (event,) = loop.run(collect(make_trigger()))
    read = JobEvent.from_payload(event.payload)
    assert read.error == ErrorInfo("HitPawAuthenticationError", 110400000, 400)
    odd = {**event.payload, "code": True, "http_status": "400", "error_type": 7}
    assert JobEvent.from_payload(odd).error == ErrorInfo()


def test_timeout_when_the_deadline_passes(fake_client: FakeAsyncClient, loop: VirtualTimeLoop) -> None:
    fake_client.default = Answer(body=status_body(JOB, "CONVERTING"))
    [(fired_at, event)] = loop.run(timed(make_trigger(end_in=0.05, poll_interval=0.02)))
    assert event.payload["status"] == "timeout"
    assert event.payload["job_status"] == "CONVERTING"
    # At the deadline, not at the next poll after it (0.06 s); polled every 0.02 s until then.
    assert fired_at == pytest.approx(0.05, abs=1e-6)
    assert len(fake_client.requests) >= 3
    assert fake_client.closed


def test_deadline_in_the_past_still_polls_once(fake_client: FakeAsyncClient, loop: VirtualTimeLoop) -> None:
    """A triggerer that comes back after the deadline gives the job one last look before timing out."""
    fake_client.answers = [Answer(body=status_body(JOB, "COMPLETED"))]
    (event,) = loop.run(collect(make_trigger(end_in=-10)))
    assert event.payload["status"] == "success"


def test_transient_faults_are_survived(
    fake_client: FakeAsyncClient, no_sleep: list[float], loop: VirtualTimeLoop
) -> None:
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
    (event,) = loop.run(collect(make_trigger()))
    assert event.payload["status"] == "success"
    assert len(fake_client.requests) == len(faults) + 1
    assert 2 in [round(d) for d in no_sleep if d >= 2], "Retry-After was not honoured"


def test_unknown_status_is_not_a_failure(fake_client: FakeAsyncClient, loop: VirtualTimeLoop) -> None:
    fake_client.answers = [
        Answer(body=status_body(JOB, "PAUSED")),
        Answer(body=status_body(JOB, "COMPLETED")),
    ]
    (event,) = loop.run(collect(make_trigger()))
    assert event.payload["status"] == "success"


def test_client_closed_on_cancellation(fake_client: FakeAsyncClient, loop: VirtualTimeLoop) -> None:
    fake_client.default = Answer(body=status_body(JOB, "CONVERTING"))
    trigger = make_trigger(poll_interval=30)

    async def consume() -> None:
        async for _ in trigger.run():
            pytest.fail("no event expected before cancellation")

    async def cancel_while_it_waits() -> None:
        task = asyncio.ensure_future(consume())
        # Bounded: a trigger that ends before its first poll (no connection, say) fails here, and says why.
        await wait_until(lambda: fake_client.requests, task, "the first poll")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    loop.run(cancel_while_it_waits())
    assert fake_client.closed
    assert fake_client.close_calls == 1


def test_logs_status_changes_not_every_poll(
    fake_client: FakeAsyncClient, log_text: Any, loop: VirtualTimeLoop
) -> None:
    fake_client.answers = [Answer(body=status_body(JOB, "CONVERTING"))] * 5 + [
        Answer(body=status_body(JOB, "COMPLETED"))
    ]
    loop.run(collect(make_trigger()))
    logs = log_text()
    # Five polls saw CONVERTING and one COMPLETED; a line per poll would log the first five times as often.
    # (A line may show in more than one captured channel, hence the comparison, not a count of 1.)
    assert logs.count("is COMPLETED") >= 1
    assert logs.count("is CONVERTING") == logs.count("is COMPLETED")
    assert SECRET_KEY not in logs


def test_connection_read_without_blocking_call(
    fake_client: FakeAsyncClient, mocker: pytest.FixtureRequest, loop: VirtualTimeLoop
) -> None:
    """The connection must come from common.compat's get_async_connection, not a blocking lookup."""
    from airflow.providers.common.compat import connection

    spy = mocker.spy(connection, "get_async_connection")  # type: ignore[attr-defined]
    fake_client.answers = [Answer(body=status_body(JOB, "COMPLETED"))]
    loop.run(collect(make_trigger()))
    spy.assert_awaited_once()
    assert spy.call_args.args[0] == "hitpaw_default"


def test_an_early_event_is_held_until_not_before(fake_client: FakeAsyncClient, loop: VirtualTimeLoop) -> None:
    """A job done within a second of the deferral: the event waits for not_before (Airflow's race)."""
    fake_client.default = Answer(200, status_body(JOB, "COMPLETED"))
    trigger = SegmentationTrigger(JOB, "hitpaw_default", 1, end_time=START + 60, not_before=START + 1.5)
    [(fired_at, event)] = loop.run(timed(trigger))
    assert event.payload["status"] == "success"
    assert fired_at == pytest.approx(1.5, abs=1e-6)
    assert len(fake_client.requests) == 1  # polled at once; only the event waited


def test_a_late_event_is_not_held(fake_client: FakeAsyncClient, loop: VirtualTimeLoop) -> None:
    fake_client.default = Answer(200, status_body(JOB, "COMPLETED"))
    trigger = SegmentationTrigger(JOB, "hitpaw_default", 1, end_time=START + 60, not_before=START - 5)
    [(fired_at, event)] = loop.run(timed(trigger))
    assert event.payload["status"] == "success"
    assert fired_at == 0.0  # the clock never moved: nothing was waited for


@pytest.mark.parametrize("how", ["hangs", "drips"])
def test_a_poll_that_does_not_end_is_cut_at_the_deadline(
    fake_client: FakeAsyncClient, loop: VirtualTimeLoop, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Against a server that hangs, or drips its answer, the timeout event comes at the deadline: the poll
    is not left to run on (a whole dripped answer would have said COMPLETED, minutes later)."""
    monkeypatch.setattr(_transport, "_pause_async", asyncio.sleep)  # back-offs take time too
    fake_client.default = Answer(body=status_body(JOB, "COMPLETED"))
    stall(fake_client, how)
    [(fired_at, event)] = loop.run(timed(make_trigger(end_in=5, poll_interval=1)))
    assert event.payload["status"] == "timeout"
    assert fired_at == pytest.approx(5, abs=1e-6)
    assert len(fake_client.requests) == 1  # cut at the deadline: no time was left for another
    assert fake_client.closed


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
    return SegmentationBatchTrigger(job_ids, "hitpaw_default", interval, START + end_in, max_in_flight=4)


def run(loop: VirtualTimeLoop, t: SegmentationBatchTrigger) -> dict[str, Any]:
    events = loop.run(collect(t))
    assert len(events) == 1
    return dict(events[0].payload)


def test_serialize_round_trip_without_secret() -> None:
    t = batch_trigger(["a", "b"])
    path, kwargs = t.serialize()
    assert path == "airflow_provider_hitpaw.triggers.hitpaw.SegmentationBatchTrigger"
    assert SegmentationBatchTrigger(**kwargs).serialize() == (path, kwargs)
    assert SECRET_KEY not in json.dumps(kwargs)


def test_polls_are_spread_over_the_interval(client: dict[str, Any], loop: VirtualTimeLoop) -> None:
    jobs = [f"job-{i}" for i in range(10)]
    polls = TimedClient({job: ["CONVERTING", "COMPLETED"] for job in jobs})
    client["client"] = polls
    payload = run(loop, batch_trigger(jobs, interval=0.5))
    assert payload["status"] == "success"
    assert payload["completed"] == 10
    assert [len(polls.polls[job]) for job in jobs] == [2] * 10
    first_round = [polls.polls[job][0] for job in jobs]
    # Ten polls over the first 0.5 s: one every 0.05 s, in order, not a burst...
    spread = [at - first_round[0] for at in first_round]
    assert spread == pytest.approx([i * 0.05 for i in range(10)], abs=1e-6)
    # ...and each job's next poll one interval after its first.
    again = [polls.polls[job][1] - polls.polls[job][0] for job in jobs]
    assert again == pytest.approx([0.5] * 10, abs=1e-6)


def test_event_stays_small_for_thousands_of_jobs(client: dict[str, Any], loop: VirtualTimeLoop) -> None:
    jobs = [f"job-{i:05d}-0123456789abcdef" for i in range(3000)]
    client["client"] = TimedClient({job: ["COMPLETED"] for job in jobs} | {jobs[7]: ["ERROR"]})
    payload = run(loop, batch_trigger(jobs, interval=0.01))
    assert payload["completed"] == 2999
    assert payload["failed"] == {jobs[7]: "ended with status ERROR"}
    assert len(json.dumps(payload)) < 1000


def test_timeout_lists_the_open_jobs(client: dict[str, Any], loop: VirtualTimeLoop) -> None:
    client["client"] = TimedClient({"a": ["COMPLETED"], "b": ["CONVERTING"]})
    payload = run(loop, batch_trigger(["a", "b"], interval=0.05, end_in=0.2))
    assert payload["status"] == "timeout"
    assert (payload["completed"], payload["pending"]) == (1, ["b"])
    assert loop.time() == pytest.approx(0.2, abs=1e-6)  # fired at the deadline


@pytest.mark.parametrize("how", ["hangs", "drips"])
def test_polls_that_do_not_end_are_cut_at_the_batch_deadline(
    client: dict[str, Any], loop: VirtualTimeLoop, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A hanging API or a long answer once ran a round of polls minutes past end_time."""
    monkeypatch.setattr(_transport, "_pause_async", asyncio.sleep)  # back-offs take time too
    jobs = [f"job-{i}" for i in range(5)]
    stalled = TimedClient({job: ["COMPLETED"] for job in jobs})
    stall(stalled, how)
    client["client"] = stalled
    payload = run(loop, batch_trigger(jobs, interval=1, end_in=3))
    assert payload["status"] == "timeout"
    assert payload["pending"] == jobs
    assert loop.time() == pytest.approx(3, abs=1e-6)
    # Four polls at a time (max_in_flight), each cut at the deadline; the fifth never had a free slot.
    assert [json["job_id"] for _, json in stalled.requests] == jobs[:4]


def test_transient_faults_keep_the_job_open(client: dict[str, Any], loop: VirtualTimeLoop) -> None:
    client["client"] = TimedClient({"a": ["HTTP-500"] * 6 + ["COMPLETED"]})
    payload = run(loop, batch_trigger(["a"], interval=0.05))
    assert payload["status"] == "success"


def test_a_bad_key_stops_the_batch_with_hitpaw_code(client: dict[str, Any], loop: VirtualTimeLoop) -> None:
    client["client"] = TimedClient({"a": ["HTTP-bad-key"], "b": ["HTTP-bad-key"]})
    payload = run(loop, batch_trigger(["a", "b"], interval=0.05))
    assert payload["status"] == "error"
    assert payload["code"] == 110400000
    assert SECRET_KEY not in json.dumps(payload)


def test_progress_is_logged_at_a_cadence(
    client: dict[str, Any], log_text: Any, loop: VirtualTimeLoop
) -> None:
    jobs = [f"job-{i}" for i in range(100)]
    client["client"] = TimedClient(
        {job: ["CONVERTING"] * (i % 5 + 1) + ["COMPLETED"] for i, job in enumerate(jobs)}
    )
    run(loop, batch_trigger(jobs, interval=0.01))
    progress = [line for line in log_text().splitlines() if " completed, " in line]
    assert any("100/100 completed, 0 failed" in line for line in progress)
    assert len(progress) <= 2 * 12, "a progress line per poll, not per tenth of the batch"


# === a poll that failed is not a job that failed =======================================================


def test_a_poll_that_fails_for_good_is_not_reported_as_a_failed_job(
    fake_client: FakeAsyncClient, loop: VirtualTimeLoop
) -> None:
    """A gateway's bare 404 once ended the wait as if the job had failed, while HitPaw went on with it."""
    fake_client.answers = [
        Answer(body=status_body(JOB, "CONVERTING")),
        Answer(status=404, body=b"<html>Not Found</html>"),
    ]
    (event,) = loop.run(collect(make_trigger()))
    payload = event.payload
    assert payload["status"] == "error"
    assert payload["unreadable"] is True
    assert (payload["error_type"], payload["http_status"], payload["code"]) == (
        "HitPawInvalidRequestError",
        404,
        None,
    )
    assert payload["job_status"] == "CONVERTING"
    assert "the job itself has not failed" in payload["message"]
    failure = JobEvent.from_payload(payload).failure()
    assert type(failure).__name__ == "HitPawInvalidRequestError"
    assert len(fake_client.requests) == 2
    assert SECRET_KEY not in json.dumps(payload)


def test_hitpaw_saying_the_job_is_unknown_is_no_unreadable_poll(
    fake_client: FakeAsyncClient, loop: VirtualTimeLoop
) -> None:
    fake_client.answers = [Answer(status=400, body=envelope(code=100400002, message="Bad Request"))]
    (event,) = loop.run(collect(make_trigger()))
    assert event.payload["status"] == "error"
    assert "unreadable" not in event.payload
    assert event.payload["code"] == 100400002


class GatewayClient(TimedClient):
    """A :class:`TimedClient` whose script also knows ``HTTP-404``: a gateway's bare refusal."""

    def post(self, url: str, json: dict[str, Any], **kwargs: Any) -> Any:
        statuses = self.script[json["job_id"]]
        if statuses[0] != "HTTP-404":
            return super().post(url, json, **kwargs)
        if len(statuses) > 1:
            statuses.pop(0)
        self.requests.append((url, json))
        return FakeAsyncResponse(Answer(status=404, body=b"<html>Not Found</html>"))


def test_a_batch_keeps_jobs_whose_poll_failed_for_good_out_of_failed(
    client: dict[str, Any], loop: VirtualTimeLoop, log_text: Any
) -> None:
    client["client"] = GatewayClient({"a": ["COMPLETED"], "b": ["ERROR"], "c": ["CONVERTING", "HTTP-404"]})
    payload = run(loop, batch_trigger(["a", "b", "c"], interval=0.05))
    assert payload["status"] == "success"
    assert payload["completed"] == 1
    assert payload["failed"] == {"b": "ended with status ERROR"}
    assert payload["unreadable"] == {
        "c": "HitPawInvalidRequestError: HitPaw (HTTP 404): HTTP 404 without a HitPaw answer: "
        "'<html>Not Found</html>'"
    }
    assert any("1/3 completed, 1 failed, 1 unreadable" in line for line in log_text().splitlines())
