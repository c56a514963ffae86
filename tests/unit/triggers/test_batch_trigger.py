from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest

from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationBatchTrigger
from tests.conftest import SECRET_KEY
from tests.unit.fakes import Answer, FakeAsyncClient, envelope, status_body


class TimedClient(FakeAsyncClient):
    """Answers each job's status from a script, and notes when each poll was sent."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        super().__init__()
        self.script = script
        self.sent_at: list[float] = []

    def post(self, url: str, json: dict[str, Any], **kwargs: Any) -> Any:
        self.sent_at.append(time.monotonic())
        job_id = json["job_id"]
        statuses = self.script[job_id]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if status.startswith("HTTP"):
            code, http_status = (110400000, 400) if status == "HTTP-bad-key" else (100500000, 500)
            self.default = Answer(status=http_status, body=envelope(code=code, message=status))
        else:
            self.default = Answer(body=status_body(job_id, status))
        return super().post(url, json, **kwargs)


@pytest.fixture
def client(hitpaw_conn: str, no_sleep: list[float], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    holder: dict[str, Any] = {}
    real = SegmentationBatchTrigger._make_hook

    def make_hook(self: SegmentationBatchTrigger) -> HitPawAsyncHook:
        hook = real(self)
        hook._client = holder["client"]
        return hook

    monkeypatch.setattr(SegmentationBatchTrigger, "_make_hook", make_hook)
    return holder


def trigger(job_ids: list[str], interval: float = 0.5, end_in: float = 30) -> SegmentationBatchTrigger:
    return SegmentationBatchTrigger(
        job_ids, "hitpaw_default", interval, time.time() + end_in, max_in_flight=4
    )


async def run(t: SegmentationBatchTrigger) -> dict[str, Any]:
    events = [event async for event in t.run()]
    assert len(events) == 1
    return dict(events[0].payload)


def test_serialize_round_trip_without_secret() -> None:
    t = trigger(["a", "b"])
    path, kwargs = t.serialize()
    assert path == "airflow_provider_hitpaw.triggers.hitpaw.SegmentationBatchTrigger"
    assert SegmentationBatchTrigger(**kwargs).serialize() == (path, kwargs)
    assert SECRET_KEY not in json.dumps(kwargs)


async def test_polls_are_spread_over_the_interval(client: dict[str, Any]) -> None:
    jobs = [f"job-{i}" for i in range(10)]
    client["client"] = TimedClient({job: ["CONVERTING", "COMPLETED"] for job in jobs})
    payload = await run(trigger(jobs, interval=0.5))
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
    payload = await run(trigger(jobs, interval=0.01))
    assert payload["completed"] == 2999
    assert payload["failed"] == {jobs[7]: "ended with status ERROR"}
    assert len(json.dumps(payload)) < 1000


async def test_timeout_lists_the_open_jobs(client: dict[str, Any]) -> None:
    client["client"] = TimedClient({"a": ["COMPLETED"], "b": ["CONVERTING"]})
    payload = await run(trigger(["a", "b"], interval=0.05, end_in=0.2))
    assert payload["status"] == "timeout"
    assert (payload["completed"], payload["pending"]) == (1, ["b"])


async def test_transient_faults_keep_the_job_open(client: dict[str, Any]) -> None:
    client["client"] = TimedClient({"a": ["HTTP-500"] * 6 + ["COMPLETED"]})
    payload = await run(trigger(["a"], interval=0.05))
    assert payload["status"] == "success"


async def test_a_bad_key_stops_the_batch_with_hitpaw_code(client: dict[str, Any]) -> None:
    client["client"] = TimedClient({"a": ["HTTP-bad-key"], "b": ["HTTP-bad-key"]})
    payload = await run(trigger(["a", "b"], interval=0.05))
    assert payload["status"] == "error"
    assert payload["code"] == 110400000
    assert SECRET_KEY not in json.dumps(payload)


async def test_progress_is_logged_at_a_cadence(client: dict[str, Any], log_text: Any) -> None:
    jobs = [f"job-{i}" for i in range(100)]
    client["client"] = TimedClient(
        {job: ["CONVERTING"] * (i % 5 + 1) + ["COMPLETED"] for i, job in enumerate(jobs)}
    )
    await run(trigger(jobs, interval=0.01))
    progress = [line for line in log_text().splitlines() if " completed, " in line]
    assert any("100/100 completed, 0 failed" in line for line in progress)
    assert len(progress) <= 2 * 12, "a progress line per poll, not per tenth of the batch"
