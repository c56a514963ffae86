"""SegmentImageBatchOperator and SegmentationBatchTrigger against the emulator."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator
from tests.conftest import FakeStateStore, run_deferred, task_context
from tests.integration.catalogue import unique_copy

SAMPLES = ["shoe.jpg", "portrait.png", "product.webp", "mug.jpg"]


pytestmark = pytest.mark.usefixtures("fast_retries")


def urls(emulator: Any, count: int) -> list[str]:
    return [f"{emulator.sample_url(SAMPLES[i % len(SAMPLES)])}?n={i}" for i in range(count)]


def test_results_in_input_order_one_job_per_unique_url(hitpaw_emulator: Any) -> None:
    inputs = urls(hitpaw_emulator, 24)
    inputs.insert(5, inputs[0])  # a duplicate is segmented once
    operator = SegmentImageBatchOperator(task_id="batch", file_urls=inputs, poll_interval=1, max_in_flight=6)
    results = run_deferred(operator, task_context())
    assert [r["file_url"] for r in results] == inputs
    assert all(r["status"] == "COMPLETED" for r in results)
    assert all(r["res_url"].endswith("cutout.png") and r["mask_url"].endswith("mask.png") for r in results)
    assert results[5]["job_id"] == results[0]["job_id"]
    jobs = hitpaw_emulator.state()["jobs"]
    assert len(jobs) == 24
    # Each result is the job HitPaw made from that image, also after the carried kwargs came back from
    # the database with their keys reordered (run_deferred does what PostgreSQL's JSONB does).
    made_from = {job["job_id"]: job["file_url"] for job in jobs}
    assert [made_from[r["job_id"]] for r in results] == inputs
    assert sorted(job["file_url"] for job in jobs) == sorted(set(inputs))


def test_failed_images_are_reported_per_image(hitpaw_emulator: Any) -> None:
    inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("broken.jpg")]
    lenient = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1, fail_on_error=False)
    results = run_deferred(lenient, task_context())
    assert [r["status"] for r in results] == ["COMPLETED", "ERROR"]
    assert results[1]["error"]["type"] == "HitPawJobFailedError"

    strict = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1)
    context = task_context()
    context["ti"].xcom_push = lambda key, value: context.setdefault("pushed", {}).update({key: value})
    with pytest.raises(AirflowException, match="1 of 2 images"):
        run_deferred(strict, context)
    assert [r["status"] for r in context["pushed"]["results"]] == ["COMPLETED", "ERROR"]


def test_bad_urls_refuse_the_batch_before_any_coin_is_spent(hitpaw_emulator: Any) -> None:
    inputs = [hitpaw_emulator.sample_url("shoe.jpg"), "ftp://127.0.0.1/a.jpg", "https://127.0.0.1/a.gif"]
    operator = SegmentImageBatchOperator(task_id="b", file_urls=inputs)
    with pytest.raises(AirflowFailException, match=r"file_urls.*2 input"):
        operator.execute(task_context())
    assert hitpaw_emulator.state()["jobs"] == []


def test_rate_limits_slow_the_whole_batch_and_drop_nothing(hitpaw_emulator: Any) -> None:
    hitpaw_emulator.set_faults(["429:share=0.3,retry_after=0.1,paths=/api/image-segmentation"], seed=3)
    inputs = urls(hitpaw_emulator, 40)
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=inputs, poll_interval=1, max_in_flight=8, deferrable=False
    )
    results = operator.execute(task_context())
    assert all(r["status"] == "COMPLETED" for r in results)
    state = hitpaw_emulator.state()
    assert state["faults_served"].get("429", 0) > 0, "the scenario served no 429: it proves nothing"
    assert len(state["jobs"]) == 40
    assert state["requests"][_api.SUBMIT_PATH] == 40 + state["faults_served"]["429"]


def test_not_deferrable_waits_in_the_worker(hitpaw_emulator: Any) -> None:
    inputs = urls(hitpaw_emulator, 6)
    operator = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1, deferrable=False)
    assert [r["status"] for r in operator.execute(task_context())] == ["COMPLETED"] * 6


def test_a_retry_reuses_the_jobs_of_the_earlier_try(hitpaw_emulator: Any) -> None:
    hitpaw_emulator.configure(job_seconds=1.0)
    inputs = urls(hitpaw_emulator, 12)
    store = FakeStateStore()
    operator = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1)
    with pytest.raises(TaskDeferred):
        operator.execute(task_context(store=store))  # the first try defers... and its worker dies
    assert len(hitpaw_emulator.state()["jobs"]) == 12
    results = run_deferred(operator, task_context(store=store))  # the retry
    assert all(r["status"] == "COMPLETED" for r in results)
    assert len(hitpaw_emulator.state()["jobs"]) == 12, "the retry paid again for images already submitted"


def test_a_retry_submits_again_only_the_images_that_failed(hitpaw_emulator: Any) -> None:
    inputs = [*urls(hitpaw_emulator, 3), hitpaw_emulator.sample_url("broken.jpg")]
    store = FakeStateStore()
    operator = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1)
    first_try = task_context(store=store)
    with pytest.raises(AirflowException, match="1 of 4 images"):
        run_deferred(operator, first_try)
    first = first_try["ti"].xcom["results"]
    retry = task_context(store=store, try_number=2)
    with pytest.raises(AirflowException, match="1 of 4 images"):
        run_deferred(operator, retry)
    second = retry["ti"].xcom["results"]
    assert [r["job_id"] for r in second][:3] == [r["job_id"] for r in first][:3]
    assert second[3]["job_id"] != first[3]["job_id"]
    assert len(hitpaw_emulator.state()["jobs"]) == 5
    # What the run paid is reported, the ERROR job of the first try included.
    assert [r["consume_coins"] for r in second] == [20, 20, 20, 40]


def test_a_bad_key_fails_the_batch_without_retries(
    hitpaw_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_HITPAW_DEFAULT",
        json.dumps({"conn_type": "hitpaw", "host": hitpaw_emulator.base_url, "password": "wrong-key"}),
    )
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls(hitpaw_emulator, 3))
    with pytest.raises(AirflowFailException, match="110400000"):
        operator.execute(task_context())


def test_sources_are_uploaded_once_per_content_and_kept_under_each_name(
    hitpaw_emulator: Any, tmp_path: Any
) -> None:
    """Images from a folder, through the pre-signed upload (batch presign), results into another folder;
    files with the same bytes (the ten WebP copies) are one upload and one job, kept under every name."""
    import requests

    inbox, outbox = tmp_path / "in", tmp_path / "out"
    inbox.mkdir()
    names = [f"item-{i:02d}{suffix}" for i, suffix in enumerate([".jpg", ".png", ".webp"] * 10)]
    sample_for = {".jpg": "shoe.jpg", ".png": "portrait.png", ".webp": "product.webp"}
    samples = {
        suffix: requests.get(hitpaw_emulator.sample_url(sample), timeout=10).content
        for suffix, sample in sample_for.items()
    }
    for n, name in enumerate(names):
        suffix = name[name.rindex(".") :]
        (inbox / name).write_bytes(unique_copy(samples[suffix], suffix, n))
    sources = [str(inbox / name) for name in names]
    operator = SegmentImageBatchOperator(
        task_id="b", source_paths=sources, output_path=f"file://{outbox}", poll_interval=1, max_in_flight=6
    )
    results = run_deferred(operator, task_context())
    assert [r["source_path"] for r in results] == sources
    assert all(r["status"] == "COMPLETED" and r["error"] is None for r in results)
    assert all("/oss/objects/" in r["file_url"] for r in results)
    webp_jobs = {r["job_id"] for r in results if r["source_path"].endswith(".webp")}
    assert len(webp_jobs) == 1, "ten files with one content were submitted more than once"
    from airflow_provider_hitpaw._kept import record_name
    from airflow_provider_hitpaw.storage import input_identity, result_names

    kept = [name for source in sources for name in result_names(input_identity(source))]
    records = [record_name(name) for name in kept if not name.endswith("_mask.png")]
    assert sorted(p.name for p in outbox.iterdir() if not p.name.startswith(".hitpaw-")) == sorted(
        [*kept, *records]
    )
    assert all(name.startswith("item-") for name in kept)
    state = hitpaw_emulator.state()
    assert state["uploads"] == 21
    assert state["requests"]["/api/oss/presign-put/batch"] == 2, (
        "21 files take two presign calls of at most 20"
    )
    assert len(state["jobs"]) == 21


def test_a_source_of_the_wrong_format_refuses_the_batch_before_any_upload(
    hitpaw_emulator: Any, tmp_path: Any
) -> None:
    (tmp_path / "a.gif").write_bytes(b"GIF89a" + b"\0" * 20)
    operator = SegmentImageBatchOperator(task_id="b", source_paths=[str(tmp_path / "a.gif")])
    with pytest.raises(AirflowFailException, match="source_paths"):
        operator.execute(task_context())
    assert hitpaw_emulator.state()["uploads"] == 0


@pytest.mark.parametrize(
    ("max_failed", "broken", "fails"),
    [
        pytest.param(1, 1, False, id="count-reached"),
        pytest.param(1, 2, True, id="count-exceeded"),
        pytest.param(0.25, 1, False, id="fraction-reached"),
        pytest.param(0.25, 2, True, id="fraction-exceeded"),
    ],
)
def test_a_failure_threshold_between_all_and_nothing(
    hitpaw_emulator: Any, log_text: Any, max_failed: float, broken: int, fails: bool
) -> None:
    inputs = urls(hitpaw_emulator, 4 - broken) + [
        f"{hitpaw_emulator.sample_url('broken.jpg')}?n={i}" for i in range(broken)
    ]
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=inputs, poll_interval=1, max_failed=max_failed
    )
    if fails:
        with pytest.raises(AirflowException, match=f"{broken} of 4 images"):
            run_deferred(operator, task_context())
    else:
        results = run_deferred(operator, task_context())
        assert [r["status"] for r in results].count("ERROR") == broken
    # Why they failed, once, by kind: not a line per image.
    assert log_text().count("failed with HitPawJobFailedError") == 1


def test_max_failed_without_fail_on_error_is_a_contradiction() -> None:
    with pytest.raises(ValueError, match="max_failed"):
        SegmentImageBatchOperator(
            task_id="b", file_urls=["https://x/a.jpg"], max_failed=2, fail_on_error=False
        )


@pytest.mark.parametrize("overwrite", ["overwrite", "fail"])
def test_one_file_written_two_ways_is_one_image_paid_once(
    hitpaw_emulator: Any, tmp_path: Any, overwrite: str
) -> None:
    """``/in/a.jpg`` and ``file:///in/a.jpg`` are one file: once paid for twice, and under 'fail' one of
    them reported that its own results 'already exist'."""
    import requests

    (tmp_path / "in").mkdir()
    source = tmp_path / "in" / "a.jpg"
    source.write_bytes(requests.get(hitpaw_emulator.sample_url("shoe.jpg"), timeout=10).content)
    operator = SegmentImageBatchOperator(
        task_id="b",
        source_paths=[str(source), f"file://{source}"],
        output_path=f"file://{tmp_path / 'out'}",
        overwrite=overwrite,
        poll_interval=1,
    )
    results = run_deferred(operator, task_context())
    assert len(hitpaw_emulator.state()["jobs"]) == 1
    assert [r["source_path"] for r in results] == [str(source), f"file://{source}"]
    assert [r["status"] for r in results] == ["COMPLETED", "COMPLETED"]
    assert results[0]["res_path"] == results[1]["res_path"]
    assert all(r["error"] is None for r in results)


def test_messages_never_show_a_signed_query_or_credentials(hitpaw_emulator: Any, log_text: Any) -> None:
    inputs = [
        f"{hitpaw_emulator.sample_url('broken.jpg')}?X-Amz-Signature=SIGSECRET123",
        hitpaw_emulator.sample_url("shoe.jpg").replace("http://", "http://alice:PWSECRET@"),
    ]
    operator = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1)
    with pytest.raises(AirflowException) as raised:
        run_deferred(operator, task_context())
    for secret in ("SIGSECRET123", "PWSECRET"):
        assert secret not in str(raised.value)
        assert secret not in log_text()


def test_without_a_store_a_batch_that_paid_for_nothing_fails_for_good_and_says_so(
    hitpaw_emulator: Any,
) -> None:
    """Every submission refused with HitPaw's own 500 code: nothing was charged. On a line that keeps no
    record, a retry cannot tell this try from one that crashed after paying, and would refuse: the try
    once failed retryably, and its retry's refusal ("may have paid") hid both the cause and that nothing
    was spent. It now fails for good at once, saying so; its retry still refuses and pays nothing."""
    hitpaw_emulator.set_faults([f"500:paths={'/api/image-segmentation'}"])
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=urls(hitpaw_emulator, 3), poll_interval=1, retries=1
    )
    with pytest.raises(AirflowFailException, match=r"no coin was spent.*Clear the task to run it again"):
        operator.execute(task_context(max_tries=1, try_number=1))
    assert hitpaw_emulator.state()["jobs"] == []
    hitpaw_emulator.set_faults([])
    with pytest.raises(AirflowFailException, match="Clear the task to run the batch again"):
        operator.execute(task_context(max_tries=1, try_number=2))
    assert hitpaw_emulator.state()["jobs"] == []


def test_with_a_store_a_batch_that_paid_for_nothing_fails_retryably(hitpaw_emulator: Any) -> None:
    hitpaw_emulator.set_faults([f"500:paths={'/api/image-segmentation'}"])
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=urls(hitpaw_emulator, 3), poll_interval=1, retries=1
    )
    with pytest.raises(AirflowException) as raised:
        operator.execute(task_context(store=FakeStateStore()))
    assert not isinstance(raised.value, AirflowFailException)


class FailingStateStore(FakeStateStore):
    """Airflow 3.3's store when its API server fails: writes (and, once ``reads_fail``, reads) raise
    until ``writes_fail`` is turned off."""

    def __init__(self, *, reads_fail: bool = False) -> None:
        super().__init__()
        self.writes_fail, self.reads_fail = True, reads_fail

    def get(self, key: str, default: Any = None) -> Any:
        if self.reads_fail:
            raise RuntimeError("API server answered 503")
        return super().get(key, default)

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        if self.writes_fail:
            raise RuntimeError("API server answered 503")
        super().set(key, value, **kwargs)


def test_a_store_that_fails_to_write_costs_the_batch_nothing_it_paid_for(
    hitpaw_emulator: Any, log_text: Any
) -> None:
    """A failing write once escaped the submission loop: the batch stopped with paid jobs unwaited for,
    retryably, and its retry paid for them again."""
    inputs = urls(hitpaw_emulator, 6)
    operator = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1, retries=1)
    results = run_deferred(operator, task_context(store=FailingStateStore()))
    assert [r["status"] for r in results] == ["COMPLETED"] * 6
    assert len(hitpaw_emulator.state()["jobs"]) == 6
    said = "could not be saved to Airflow's task state store (RuntimeError: API server answered 503)"
    assert said in log_text()


def test_the_record_is_written_once_the_store_is_back(hitpaw_emulator: Any, log_text: Any) -> None:
    """One failed write once stopped the recording for the rest of the try: a time-out after the store
    came back still left the retry an empty record, and it paid for every image again."""
    from airflow_provider_hitpaw._ledger_store import LedgerStore

    hitpaw_emulator.set_faults(["slow:delay_s=0.3,paths=/api/image-segmentation"])
    inputs = urls(hitpaw_emulator, 24)  # 3.6 s of submissions: the first write (at 2 s) fails
    store = FailingStateStore()
    threading.Timer(2.6, lambda: setattr(store, "writes_fail", False)).start()
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=inputs, poll_interval=1, retries=1, max_in_flight=2
    )
    with pytest.raises(TaskDeferred):
        operator.execute(task_context(store=store))
    ledger = LedgerStore.for_task(task_context(store=store), None, logging.getLogger()).load()
    recorded = [entry.job_id for entry in ledger.entries.values()]
    assert sorted(recorded) == sorted(job["job_id"] for job in hitpaw_emulator.state()["jobs"])
    assert "is saved to Airflow's task state store again" in log_text()


@pytest.mark.parametrize("store_works", [True, False], ids=["store-works", "store-fails"])
def test_a_stop_after_a_failed_store_write_is_final(hitpaw_emulator: Any, store_works: bool) -> None:
    """A time-out or a stop ended the try retryably although the store had failed to record jobs it paid
    for: the retry paid for them again."""
    hitpaw_emulator.set_faults(["slow:delay_s=0.2,paths=/api/image-segmentation"])
    store = FailingStateStore()
    store.writes_fail = not store_works
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=urls(hitpaw_emulator, 40), poll_interval=1, retries=1, max_in_flight=2
    )
    threading.Timer(2.5, operator.on_kill).start()  # what Airflow 3 calls on SIGTERM
    with pytest.raises(AirflowException, match="asked to stop") as raised:
        operator.execute(task_context(store=store))
    assert hitpaw_emulator.state()["jobs"], "the scenario paid nothing: it proves nothing"
    assert isinstance(raised.value, AirflowFailException) is not store_works


@pytest.mark.parametrize("store_works", [True, False], ids=["store-works", "store-fails"])
def test_a_time_out_of_an_in_process_wait_after_a_failed_store_write_is_final(
    hitpaw_emulator: Any, monkeypatch: pytest.MonkeyPatch, store_works: bool
) -> None:
    from tests.unit.fakes import Interrupted

    store = FailingStateStore()
    store.writes_fail = not store_works
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=urls(hitpaw_emulator, 3), poll_interval=1, retries=1, deferrable=False
    )

    def time_out(*args: Any, **kwargs: Any) -> Any:
        raise Interrupted  # Airflow's execution_timeout, while the batch waits in the worker

    monkeypatch.setattr(operator, "_wait_in_process", time_out)
    with pytest.raises((AirflowFailException, Interrupted)) as raised:
        operator.execute(task_context(store=store))
    assert len(hitpaw_emulator.state()["jobs"]) == 3
    assert isinstance(raised.value, AirflowFailException if not store_works else Interrupted)


def test_a_stop_does_not_wait_on_a_store_that_is_down(hitpaw_emulator: Any) -> None:
    """Each write to a store that is down costs its client's retries: a stop that tried again and again
    went on past the kill Airflow sends 5 s after asking a task to stop."""
    hitpaw_emulator.set_faults(["slow:delay_s=0.2,paths=/api/image-segmentation"])  # still submitting
    asked_to_stop = threading.Event()
    #: Per write to the store: whether the stop had been asked for when it began.
    writes: list[bool] = []

    class DownStore(FailingStateStore):
        def set(self, key: str, value: Any, **kwargs: Any) -> None:
            writes.append(asked_to_stop.is_set())
            if not asked_to_stop.is_set():
                # Airflow's SIGTERM comes while the first write is under way (on_kill in its handler):
                # where it lands is set, not left to a timer racing the batch.
                asked_to_stop.set()
                operator.on_kill()
            raise RuntimeError("API server answered 503")

    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=urls(hitpaw_emulator, 40), poll_interval=1, retries=1, max_in_flight=2
    )
    with pytest.raises(AirflowFailException, match="asked to stop"):
        operator.execute(task_context(store=DownStore()))
    assert writes, "the scenario wrote nothing: it proves nothing"
    assert writes.count(True) <= 1, f"writes after the stop: {writes}"


def test_an_answer_recorded_twice_is_counted_once(
    hitpaw_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interruption while an answer is recorded makes it recorded again: it was counted twice in the
    metrics (coins spent)."""
    from airflow_provider_hitpaw import _metrics
    from airflow_provider_hitpaw.operators import segment_image_batch
    from tests.unit.fakes import Interrupted

    counted: list[Any] = []
    monkeypatch.setattr(_metrics, "count_submitted", lambda coins: counted.append(coins))
    real_report = segment_image_batch._SubmitProgress.report
    interrupted: list[bool] = []

    def report(self: Any, failed: bool) -> None:
        if not interrupted:
            interrupted.append(True)
            raise Interrupted  # a time-out, landing after the answer was counted
        real_report(self, failed)

    monkeypatch.setattr(segment_image_batch._SubmitProgress, "report", report)
    store = FakeStateStore()
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls(hitpaw_emulator, 4), max_in_flight=2)
    with pytest.raises(Interrupted):
        operator.execute(task_context(store=store))
    created = hitpaw_emulator.state()["jobs"]
    assert created
    assert len(counted) == len(created)


def test_a_store_failing_reads_on_resuming_does_not_fail_a_finished_batch(hitpaw_emulator: Any) -> None:
    store = FailingStateStore()
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls(hitpaw_emulator, 3), poll_interval=1)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(task_context(store=store))
    store.reads_fail = True
    trigger, kwargs = deferred.value.trigger, deferred.value.kwargs

    async def one_event() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger yielded no event")

    results = operator.execute_complete(task_context(store=store), asyncio.run(one_event()), **kwargs)
    assert [r["status"] for r in results] == ["COMPLETED"] * 3


def test_no_coin_spent_is_said_only_when_true(hitpaw_emulator: Any) -> None:
    """Answers lost after HitPaw charged leave no job id: the batch once said 'no coin was spent'."""
    hitpaw_emulator.set_faults(["drop:after_commit=true,paths=/api/image-segmentation"])
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls(hitpaw_emulator, 2), poll_interval=1)
    with pytest.raises(AirflowFailException) as raised:
        operator.execute(task_context())
    assert hitpaw_emulator.state()["jobs"], "the scenario charged nothing: it proves nothing"
    assert "no coin was spent" not in str(raised.value)


def test_after_a_failed_store_write_a_failure_after_paying_is_final(hitpaw_emulator: Any) -> None:
    inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("broken.jpg")]
    operator = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1, retries=1)
    with pytest.raises(AirflowFailException, match="not retried automatically: this batch has paid"):
        run_deferred(operator, task_context(store=FailingStateStore()))


def test_a_budget_stops_the_batch_within_it_and_says_where(hitpaw_emulator: Any, log_text: Any) -> None:
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=urls(hitpaw_emulator, 12), max_coins=100, fail_on_error=False, poll_interval=1
    )
    results = run_deferred(operator, task_context())
    paid = hitpaw_emulator.state()["jobs"]
    assert len(paid) == 5, "100 coins buy five images at 20"
    assert sum(r["consume_coins"] or 0 for r in results) == 100
    left_out = [r for r in results if r["status"] == "NOT_SUBMITTED"]
    assert len(left_out) == 7
    assert {r["error"]["type"] for r in left_out} == {"HitPawBudgetError"}
    assert "budget of 100 coins" in left_out[0]["error"]["message"]
    logged = log_text()
    assert "0 kept, 5 to submit, at most 100 coins (budget 100 coins)" in logged
    assert "The budget of 100 coins stopped the batch: 100 spent, 7 image(s) not submitted" in logged


def test_a_budget_fails_the_task_when_images_are_left_out(hitpaw_emulator: Any) -> None:
    operator = SegmentImageBatchOperator(task_id="b", file_urls=urls(hitpaw_emulator, 4), max_coins=40)
    with pytest.raises(AirflowException, match="2 of 4 images were not segmented"):
        run_deferred(operator, task_context())
    assert len(hitpaw_emulator.state()["jobs"]) == 2


def test_the_budget_prices_submissions_at_what_hitpaw_answers(hitpaw_emulator: Any) -> None:
    """The first answer names a price above the documented 20: the rest are priced at it."""
    hitpaw_emulator.set_faults(["odd_coins:value=30"])
    operator = SegmentImageBatchOperator(
        task_id="b",
        file_urls=urls(hitpaw_emulator, 6),
        max_coins=100,
        fail_on_error=False,
        poll_interval=1,
        max_in_flight=4,
    )
    results = run_deferred(operator, task_context())
    assert sum(r["status"] == "COMPLETED" for r in results) == 3, "30 + 30 + 30 fit in 100, a fourth not"
    assert sum(r["consume_coins"] or 0 for r in results) == 90


@pytest.mark.parametrize(
    "faults",
    [[], ["odd_coins:value=null"], ['odd_coins:value="20"']],
    ids=["cost-stated", "cost-missing", "cost-as-text"],
)
def test_what_earlier_tries_paid_counts_against_the_budget_of_a_retry(
    hitpaw_emulator: Any, faults: list[str]
) -> None:
    """Two images whose jobs end in ERROR, a budget of 40 coins: the first try spends the 40. Its retry
    once submitted both again (80 coins in all): it counted only the jobs it reused, and a job whose cost
    HitPaw did not state as a number counted 0."""
    hitpaw_emulator.set_faults(faults)
    broken = [f"{hitpaw_emulator.sample_url('broken.jpg')}?n={i}" for i in range(2)]
    coins_before = hitpaw_emulator.state()["coins"]
    store = FakeStateStore()
    for try_number in (1, 2):
        operator = SegmentImageBatchOperator(
            task_id="b", file_urls=broken, max_coins=40, poll_interval=1, min_deferred_seconds=0
        )
        with pytest.raises(AirflowException):
            run_deferred(operator, task_context(store=store, try_number=try_number, max_tries=2))
    assert len(hitpaw_emulator.state()["jobs"]) == 2
    assert coins_before - hitpaw_emulator.state()["coins"] == 40


def test_a_retry_does_not_count_the_kept_inputs_as_reused_again(
    hitpaw_emulator: Any, tmp_path: Any, mocker: Any
) -> None:
    from airflow_provider_hitpaw import _metrics

    stats = mocker.MagicMock()
    mocker.patch.object(_metrics, "_stats", return_value=stats)
    good, bad = hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("broken.jpg")

    def batch(inputs: list[str]) -> SegmentImageBatchOperator:
        return SegmentImageBatchOperator(
            task_id="b",
            file_urls=inputs,
            output_path=f"file://{tmp_path}/out",
            overwrite="skip",
            poll_interval=1,
            min_deferred_seconds=0,
            retries=1,
        )

    run_deferred(batch([good]), task_context())  # the first night keeps the good image
    stats.reset_mock()
    store = FakeStateStore()
    for try_number in (1, 2):  # the second night: a try and its retry, both failing on the broken image
        with pytest.raises(AirflowException):
            run_deferred(batch([good, bad]), task_context(store=store, try_number=try_number, max_tries=1))
    reused = sum(c.args[1] for c in stats.incr.call_args_list if c.args[0] == "hitpaw.jobs_reused")
    assert reused == 1


@pytest.mark.parametrize("with_output", [True, False])
def test_a_deferring_batch_leaves_its_links_a_value(
    hitpaw_emulator: Any, tmp_path: Any, with_output: bool
) -> None:
    """The links are resolved when the deferring try ends: without a value they logged 'XCom not found'."""
    from airflow_provider_hitpaw.links import LINKS_XCOM_KEY

    context = task_context()
    output = {"output_path": f"file://{tmp_path}/out"} if with_output else {}
    operator = SegmentImageBatchOperator(
        task_id="b", file_urls=[hitpaw_emulator.sample_url("shoe.jpg")], **output
    )
    with pytest.raises(TaskDeferred):
        operator.execute(context)
    assert LINKS_XCOM_KEY in context["ti"].xcom
