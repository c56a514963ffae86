"""What answers at the base URL is untrusted: the emulator plays a hostile or broken HitPaw, for real, on
127.0.0.1, and both hooks, the triggers and the operators must hold (caps, deadlines, address checks, no
double payment, nothing kept that is not a whole PNG, nothing quoted that the server slipped in).
"""

from __future__ import annotations

import asyncio
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import (
    HitPawConnectionError,
    HitPawError,
    HitPawResponseError,
    HitPawTimeoutError,
    HitPawUntrustedAnswerError,
)
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook, HitPawHook
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator, SegmentImageOperator
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationBatchTrigger, SegmentationTrigger
from tests.conftest import FakeStateStore, run_deferred, task_context

MIB = 1024 * 1024
ONE_TRY = _api.RetryPolicy(max_attempts=1)
STATUS = "/api/task-status"
SUBMIT = "/api/image-segmentation"


def submitted_job(emulator: Any) -> str:
    with HitPawHook() as hook:
        return hook.submit_segmentation(emulator.sample_url("shoe.jpg")).job_id


def jobs(emulator: Any) -> list[dict[str, Any]]:
    return list(emulator.state()["jobs"])


async def poll_async(job_id: str, **options: Any) -> Any:
    async with HitPawAsyncHook(**options) as hook:
        return await hook.get_task_status(job_id)


def one_event(trigger: Any) -> dict[str, Any]:
    async def collect() -> list[Any]:
        return [event async for event in trigger.run()]

    events = asyncio.run(collect())
    assert len(events) == 1
    return dict(events[0].payload)


# --- answers that never end -----------------------------------------------------------------------


def poll_once(side: str, job_id: str, policy: _api.RetryPolicy = ONE_TRY) -> Any:
    if side == "sync":
        with HitPawHook(retry_policy=policy) as hook:
            return hook.get_task_status(job_id)
    return asyncio.run(poll_async(job_id, retry_policy=policy))


@pytest.mark.parametrize("kind", ["huge_json", "gzip_bomb", "endless"])
@pytest.mark.parametrize("side", ["sync", "async"])
def test_an_oversized_api_answer_is_cut_at_a_mebibyte(hitpaw_emulator: Any, kind: str, side: str) -> None:
    """A 300 MB task-status answer once took a worker to 1 GB and the shared triggerer to 720 MB."""
    job_id = submitted_job(hitpaw_emulator)
    hitpaw_emulator.set_faults([f"{kind}:paths={STATUS}"])
    with pytest.raises(HitPawUntrustedAnswerError, match="larger than"):
        poll_once(side, job_id)  # the emulator builds its bomb once, outside the measurement
    tracemalloc.start()
    try:
        with pytest.raises(HitPawUntrustedAnswerError, match="larger than"):
            poll_once(side, job_id)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Well under the answer's size (the emulator's own buffers count too: it runs in this process).
    assert peak < 16 * MIB, f"peak {peak / MIB:.1f} MiB"


# --- answers that trickle or hang ---------------------------------------------------------------------
#
# The job is done by the time the server would answer (a dripped answer takes minutes, a hanging one a
# minute): a wait that let the poll run on would end in success, not in its timeout. When exactly the
# timeout comes is checked where the test drives the clock (tests/unit/triggers, tests/unit/hooks), not
# by timing these.


def test_a_blocking_wait_ends_by_its_timeout_against_a_trickling_server(hitpaw_emulator: Any) -> None:
    """wait_for_completion(timeout=2) once returned after 44 s; a poll of a trickling answer never did."""
    job_id = submitted_job(hitpaw_emulator)
    hitpaw_emulator.set_faults([f"drip:delay_s=1,paths={STATUS}"])
    with HitPawHook() as hook, pytest.raises(HitPawTimeoutError):
        hook.wait_for_completion(job_id, poll_interval=1, timeout=2)


def test_a_blocking_wait_ends_by_its_timeout_against_a_hanging_server(hitpaw_emulator: Any) -> None:
    job_id = submitted_job(hitpaw_emulator)
    hitpaw_emulator.set_faults([f"slow:delay_s=60,paths={STATUS}"])
    with HitPawHook() as hook, pytest.raises(HitPawTimeoutError):
        hook.wait_for_completion(job_id, poll_interval=1, timeout=2)


@pytest.mark.parametrize("timeout", [None, 600], ids=["no-timeout", "the-waits-time-left"])
def test_an_async_poll_ends_within_its_own_time_outs_against_a_trickling_server(
    hitpaw_emulator: Any, timeout: float | None
) -> None:
    """Each byte of a dripped answer came within the read time-out: without ``timeout`` the async hook
    once read it for as long as it dripped, and with a trigger's (the wait's time left) a poll held the
    whole wait, so a job that completed meanwhile was never heard of. An exchange now ends within its own
    time-outs, as on the sync side."""
    job_id = submitted_job(hitpaw_emulator)
    hitpaw_emulator.set_faults([f"drip:delay_s=0.5,paths={STATUS}"])

    async def poll() -> None:
        hook = HitPawAsyncHook(
            connect_timeout=1, read_timeout=1, retry_policy=_api.RetryPolicy(max_attempts=1)
        )
        try:
            await hook.get_task_status(job_id, timeout=timeout)
        finally:
            await hook.close()

    async def bounded() -> None:
        await asyncio.wait_for(poll(), 20)  # the guard of this test, far beyond the hook's own end

    with pytest.raises(HitPawConnectionError):
        asyncio.run(bounded())


@pytest.mark.parametrize("fault", ["slow:delay_s=60", "drip:delay_s=1"])
def test_the_single_trigger_fires_its_timeout_by_the_deadline(hitpaw_emulator: Any, fault: str) -> None:
    job_id = submitted_job(hitpaw_emulator)
    hitpaw_emulator.set_faults([f"{fault},paths={STATUS}"])
    event = one_event(SegmentationTrigger(job_id, "hitpaw_default", 1, end_time=time.time() + 2))
    assert event["status"] == "timeout"


@pytest.mark.parametrize("fault", ["slow:delay_s=60", "drip:delay_s=1"])
def test_the_batch_trigger_fires_its_timeout_by_the_deadline(hitpaw_emulator: Any, fault: str) -> None:
    """A hanging API or a long Retry-After once ran a round of polls minutes past end_time."""
    hitpaw_emulator.configure(job_seconds=30)  # done by the time a hanging answer would come (60 s)
    with HitPawHook() as hook:
        job_ids = [
            hook.submit_segmentation(hitpaw_emulator.sample_url("shoe.jpg") + f"?n={i}").job_id
            for i in range(5)
        ]
    hitpaw_emulator.set_faults([f"{fault},paths={STATUS}"])
    event = one_event(SegmentationBatchTrigger(job_ids, "hitpaw_default", 1, end_time=time.time() + 3))
    assert event["status"] == "timeout"
    assert sorted(event["pending"]) == sorted(job_ids)


def test_one_hanging_job_does_not_hold_up_the_others(hitpaw_emulator: Any) -> None:
    """Each job keeps its own cadence: the polls of the others go on while one hangs."""
    hitpaw_emulator.configure(job_seconds=0.5)
    with HitPawHook() as hook:
        job_ids = [
            hook.submit_segmentation(hitpaw_emulator.sample_url("shoe.jpg") + f"?n={i}").job_id
            for i in range(4)
        ]
    # Every job is done before the trigger starts: however busy the machine, the first poll of each of the
    # others finds it COMPLETED, while the one whose poll hangs stays open.
    deadline = time.monotonic() + 60  # a bound only a broken emulator reaches
    while {job["status"] for job in jobs(hitpaw_emulator)} != {"COMPLETED"}:
        assert time.monotonic() < deadline, jobs(hitpaw_emulator)
        time.sleep(0.05)
    # Only the first poll hangs (the first request the rule sees): it is one job's, the rest go on.
    hitpaw_emulator.set_faults([f"slow:delay_s=30,first_n=1,paths={STATUS}"])
    event = one_event(SegmentationBatchTrigger(job_ids, "hitpaw_default", 1, end_time=time.time() + 6))
    assert event["status"] == "timeout"
    assert event["completed"] == 3
    assert len(event["pending"]) == 1


# --- answers that would pay twice, or forge ------------------------------------------------------------


@pytest.mark.parametrize("value", ['"20"', "-5", "true", "1e300", '"__missing__"'])
def test_an_odd_cost_keeps_the_job_and_pays_once(hitpaw_emulator: Any, value: str, log_text: Any) -> None:
    hitpaw_emulator.set_faults([f"odd_coins:value={value}"])
    result = SegmentImageOperator(
        task_id="t", file_url=hitpaw_emulator.sample_url("shoe.jpg"), deferrable=False, poll_interval=1
    ).execute(task_context())
    assert result["status"] == "COMPLETED"
    assert result["consume_coins"] is None
    assert len(jobs(hitpaw_emulator)) == 1, "the image was sent (and paid for) twice"
    assert "an unknown number of coins" in log_text()


@pytest.mark.parametrize(
    "value",
    ['"job\\n2026-12-02 INFO - Batch done: 0 coins"', '"\\u001b[2J\\u001b[31mred"', '"' + "j" * 10_000 + '"'],
)
def test_an_unusable_job_id_fails_without_paying_again_or_forging_a_line(
    hitpaw_emulator: Any, value: str, log_text: Any
) -> None:
    hitpaw_emulator.set_faults([f"bad_job_id:value={value}"])
    operator = SegmentImageOperator(
        task_id="t", file_url=hitpaw_emulator.sample_url("shoe.jpg"), poll_interval=1
    )
    with pytest.raises(AirflowFailException, match="not a usable job id"):
        operator.execute(task_context())
    assert len(jobs(hitpaw_emulator)) == 1, "the image was sent (and paid for) again"
    logged = log_text()
    assert "INFO - Batch done" not in logged.replace("\\n", "")
    assert "\x1b[2J" not in logged
    assert "j" * 200 not in logged


def test_one_job_id_for_two_images_is_a_bad_answer(hitpaw_emulator: Any) -> None:
    hitpaw_emulator.set_faults(["same_job_id"])
    urls = [hitpaw_emulator.sample_url("shoe.jpg") + f"?n={i}" for i in range(3)]
    results = run_deferred(
        SegmentImageBatchOperator(task_id="b", file_urls=urls, poll_interval=1, fail_on_error=False),
        task_context(),
    )
    # The submissions run in parallel: whichever answer came first keeps the job, the others are refused.
    assert sorted(r["status"] for r in results) == ["COMPLETED", "NOT_SUBMITTED", "NOT_SUBMITTED"]
    refused = [r for r in results if r["status"] == "NOT_SUBMITTED"]
    assert all(r["error"]["type"] == "HitPawUntrustedAnswerError" for r in refused)
    assert len(jobs(hitpaw_emulator)) == 3, "an image was submitted again"


def test_no_coins_stops_the_batch_at_the_first_refusal(hitpaw_emulator: Any) -> None:
    hitpaw_emulator.configure(coins=40)  # two images
    urls = [hitpaw_emulator.sample_url("shoe.jpg") + f"?n={i}" for i in range(12)]
    results = run_deferred(
        SegmentImageBatchOperator(
            task_id="b", file_urls=urls, poll_interval=1, max_in_flight=2, fail_on_error=False
        ),
        task_context(),
    )
    assert [r["status"] for r in results].count("COMPLETED") == 2
    submissions = hitpaw_emulator.state()["requests"][SUBMIT]
    assert submissions <= 2 + 2, f"{submissions} submissions: the batch went on after 'no coins'"
    stopped = [r for r in results if r["status"] == "NOT_SUBMITTED"]
    assert stopped
    assert all("110402000" in r["error"]["message"] or "stopped" in r["error"]["message"] for r in stopped)


# --- result links that lead astray ----------------------------------------------------------------------


def keep_with(emulator: Any, tmp_path: Path, **extra: Any) -> SegmentImageOperator:
    return SegmentImageOperator(
        task_id="t",
        file_url=emulator.sample_url("shoe.jpg"),
        output_path=f"file://{tmp_path / 'out'}",
        deferrable=False,
        poll_interval=1,
        **extra,
    )


@pytest.mark.parametrize(
    ("fault", "family"),
    [
        (
            "redirect:location=http://169.254.169.254/latest/meta-data/,paths=/results/*",
            HitPawUntrustedAnswerError,
        ),
        ("redirect:location=http://10.0.0.1/cut.png,paths=/results/*", HitPawUntrustedAnswerError),
        ("png_then_html", HitPawResponseError),
        # Zeros after the signature are no PNG chunk: the structure check stops these before the cap does
        # (the cap itself is tested with a well-formed endless body in tests/unit/test_storage.py).
        ("endless:paths=/results/*", HitPawResponseError),
        ("gzip_bomb:paths=/results/*", HitPawResponseError),
    ],
)
def test_a_result_link_that_leads_astray_keeps_nothing(
    hitpaw_emulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    log_text: Any,
    fault: str,
    family: type,
) -> None:
    connection = json.loads(hitpaw_emulator.connection_json)
    connection["extra"] = {"max_download_bytes": 4 * MIB}
    monkeypatch.setenv("AIRFLOW_CONN_HITPAW_DEFAULT", json.dumps(connection))
    hitpaw_emulator.set_faults([fault])
    monkeypatch.setattr(
        SegmentImageOperator, "_hook", lambda self: HitPawHook(self.hitpaw_conn_id, retry_policy=ONE_TRY)
    )
    with pytest.raises((family, AirflowFailException, HitPawError)) as raised:
        keep_with(hitpaw_emulator, tmp_path).execute(task_context())
    cause = raised.value if isinstance(raised.value, HitPawError) else raised.value.__cause__
    assert isinstance(cause, family)
    out = tmp_path / "out"
    assert not out.exists() or [p for p in out.iterdir() if not p.name.startswith(".hitpaw-")] == []
    assert "internal-secret-body" not in str(raised.value)
    assert "internal-secret-body" not in log_text()


def test_the_trigger_path_refuses_them_too(hitpaw_emulator: Any, tmp_path: Path) -> None:
    hitpaw_emulator.set_faults(["redirect:location=http://169.254.169.254/,paths=/results/*"])
    operator = SegmentImageOperator(
        task_id="t",
        file_url=hitpaw_emulator.sample_url("shoe.jpg"),
        output_path=str(tmp_path),
        poll_interval=1,
    )
    with pytest.raises(AirflowFailException, match="link-local"):
        run_deferred(operator, task_context())
    assert [p for p in tmp_path.iterdir() if not p.name.startswith(".hitpaw-")] == []


# --- a TLS handshake cut short is a network fault, not a certificate problem ---------------------------


@pytest.fixture(params=["reset", "eof"])
def handshake_dropper(request: pytest.FixtureRequest) -> Any:
    """A server on 127.0.0.1 that accepts a connection and drops it in the middle of the TLS handshake:
    with a reset (part of the ClientHello left unread), or with a clean end of stream after reading all of
    it, which the TLS layer reports as ``SSLEOFError``, a subclass of ``SSLError``."""
    import socket
    import threading
    import time as clock

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()
    accepted = [0]

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted[0] += 1
            if request.param == "reset":
                conn.recv(64)  # part of the ClientHello, then gone
            else:
                conn.settimeout(0.3)
                try:
                    while conn.recv(65536):  # the whole ClientHello, until the client waits for us
                        pass
                except OSError:
                    pass
                conn.shutdown(socket.SHUT_WR)  # a clean end of stream where the ServerHello belongs
                clock.sleep(0.2)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.getsockname()[1]}", accepted
    stop.set()
    thread.join(timeout=5)
    server.close()


@pytest.mark.parametrize("side", ["sync", "async"])
def test_a_dropped_handshake_is_retried_like_any_network_fault(
    handshake_dropper: Any, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float], side: str
) -> None:
    base_url, accepted = handshake_dropper
    monkeypatch.setenv(
        "AIRFLOW_CONN_HITPAW_DEFAULT", json.dumps({"conn_type": "hitpaw", "host": base_url, "password": "k"})
    )
    with pytest.raises(HitPawConnectionError) as raised:
        poll_once(side, "job-1", _api.RetryPolicy(max_attempts=3))
    assert raised.value.retryable, f"{type(raised.value).__name__} is permanent: {raised.value}"
    assert accepted[0] == 3
    assert len(no_sleep) == 2


def test_a_sensor_survives_a_dropped_handshake_by_deferring(
    handshake_dropper: Any, monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]
) -> None:
    """It once failed without retries: the quick look before deferring called the fault permanent."""
    from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor

    base_url, _ = handshake_dropper
    monkeypatch.setenv(
        "AIRFLOW_CONN_HITPAW_DEFAULT", json.dumps({"conn_type": "hitpaw", "host": base_url, "password": "k"})
    )
    sensor = SegmentationSensor(task_id="w", job_id="job-1", poll_interval=1, timeout=60)
    with pytest.raises(TaskDeferred):
        sensor.execute(task_context())


# --- a retry where Airflow keeps no record --------------------------------------------------------------


def test_without_a_store_a_retry_of_a_batch_that_may_have_paid_does_not_pay_blindly(
    hitpaw_emulator: Any,
) -> None:
    urls = [hitpaw_emulator.sample_url("shoe.jpg") + f"?n={i}" for i in range(3)]
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls, poll_interval=1, retries=2)
    with pytest.raises(TaskDeferred):
        operator.execute(task_context(max_tries=2))  # first try: submits, defers... and its worker dies
    assert len(jobs(hitpaw_emulator)) == 3
    with pytest.raises(AirflowFailException, match="Clear the task"):
        operator.execute(task_context(max_tries=2, try_number=2))
    assert len(jobs(hitpaw_emulator)) == 3, "the retry paid again for every image"


def test_with_a_store_the_retry_reuses_the_jobs(hitpaw_emulator: Any) -> None:
    urls = [hitpaw_emulator.sample_url("shoe.jpg") + f"?n={i}" for i in range(3)]
    store = FakeStateStore()
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls, poll_interval=1, retries=2)
    with pytest.raises(TaskDeferred):
        operator.execute(task_context(store=store))
    results = run_deferred(operator, task_context(store=store, try_number=2))
    assert [r["status"] for r in results] == ["COMPLETED"] * 3
    assert len(jobs(hitpaw_emulator)) == 3


def test_without_a_store_a_clearing_starts_over(hitpaw_emulator: Any) -> None:
    """Clearing raises max_tries: the first try after it is a deliberate new start, and submits."""
    urls = [hitpaw_emulator.sample_url("shoe.jpg")]
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls, poll_interval=1, retries=2)
    results = run_deferred(operator, task_context(max_tries=5, try_number=4))
    assert results[0]["status"] == "COMPLETED"


def test_on_kill_stops_the_batch_and_records_every_paid_job(hitpaw_emulator: Any, log_text: Any) -> None:
    """Airflow 3 only calls on_kill on SIGTERM, and kills the task seconds later: the batch must stop
    submitting at once and record every job that was answered (it once went on, and lost 180)."""
    import threading

    hitpaw_emulator.set_faults([f"slow:delay_s=0.05,paths={SUBMIT}"])
    urls = [hitpaw_emulator.sample_url("shoe.jpg") + f"?n={i}" for i in range(400)]
    store = FakeStateStore()
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls, poll_interval=1, max_in_flight=4)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            operator.execute(task_context(store=store))
        except BaseException as err:
            outcome.append(err)

    worker = threading.Thread(target=run)
    worker.start()
    while len(jobs(hitpaw_emulator)) < 20:
        assert worker.is_alive(), f"the batch ended before 20 submissions: {outcome}"
        time.sleep(0.05)
    operator.on_kill()
    at_kill = len(jobs(hitpaw_emulator))
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert outcome
    assert "asked to stop" in str(outcome[0])
    created = {job["job_id"] for job in jobs(hitpaw_emulator)}
    # Nothing starts after on_kill; only what was in flight (max_in_flight) may still land.
    assert len(created) <= at_kill + 4, f"{len(created)} submissions: the batch went on after on_kill"
    import logging

    from airflow_provider_hitpaw._ledger_store import LedgerStore

    ledger = LedgerStore.for_task(task_context(store=store), None, logging.getLogger()).load()
    recorded = {entry.job_id for entry in ledger.entries.values() if entry.job_id}
    assert recorded == created, "a paid job went unrecorded"
    # Named in the log too, before the store is written to (a slow store can outlast Airflow's kill).
    logged = log_text()
    assert "Stopping; paid for so far" in logged
    assert all(repr(job) in logged for job in created), "a paid job was not named in the log"
