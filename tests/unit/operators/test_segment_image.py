"""SegmentImageOperator (one image): it submits, then waits (deferred or in the worker), and a retry finds
the job an earlier try paid for instead of paying again.

The hook is a double (``fake_hook``); Airflow's side is a fake task context (``tests.unit.fakes``).
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any
from unittest.mock import ANY

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred

from airflow_provider_hitpaw._api import SegmentationJob, TaskStatus
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawInsufficientCoinsError,
    HitPawInvalidRequestError,
    HitPawJobFailedError,
    HitPawResponseError,
    HitPawServerError,
    HitPawStorageError,
    HitPawTimeoutError,
)
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger
from tests.conftest import SECRET_KEY, run_deferred
from tests.unit.fakes import TIMED_OUT, FakeClock, FakeStateStore, task_context

URL = "https://images.example.test/shoe-042.jpg"
JOB = "job-1"
SUBMISSION = {"job_id": JOB, "consume_coins": 20, "file_url": URL}
#: What a submission of this task carries: the given fields and when it was sent.
SENT = {**SUBMISSION, "submitted_at": ANY}
CONVERTING = TaskStatus(job_id=JOB, status="CONVERTING", original_url=URL)
COMPLETED = TaskStatus(
    job_id=JOB, status="COMPLETED", res_url="http://h/r.png", mask_url="http://h/m.png", original_url=URL
)


@pytest.fixture
def hook(fake_hook: Any, mocker: Any) -> Any:
    mocker.patch.object(SegmentImageOperator, "_hook", return_value=fake_hook)
    fake_hook.submit_segmentation.return_value = SegmentationJob(job_id=JOB, consume_coins=20)
    return fake_hook


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The Unix time the operator reads (deadlines, holds), standing still: what it computes from it is
    exact, however long the test takes."""
    from airflow_provider_hitpaw import _deferral
    from airflow_provider_hitpaw.operators import segment_image

    frozen = FakeClock()
    for module in (_deferral, segment_image):
        monkeypatch.setattr(module, "time", SimpleNamespace(time=frozen))
    return frozen


def operator(**kwargs: Any) -> SegmentImageOperator:
    return SegmentImageOperator(**{"task_id": "segment", "file_url": URL, **kwargs})


def test_submits_then_defers_to_the_trigger(hook: Any) -> None:
    started = time.time() - 10
    with pytest.raises(TaskDeferred) as deferred:
        operator(poll_interval=4, timeout=300).execute(task_context(started_at=started))
    hook.submit_segmentation.assert_called_once_with(URL)
    trigger = deferred.value.trigger
    assert isinstance(trigger, SegmentationTrigger)
    assert trigger.serialize()[1] == {
        "job_id": JOB,
        "hitpaw_conn_id": "hitpaw_default",
        "poll_interval": 4.0,
        "end_time": pytest.approx(started + 300),
        "not_before": None,
    }
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.kwargs == {"submission": SENT}


def test_without_waiting_returns_the_submission(hook: Any) -> None:
    assert operator(wait_for_completion=False).execute(task_context()) == SENT
    hook.get_task_status.assert_not_called()
    hook.wait_for_completion.assert_not_called()


def test_not_deferrable_waits_in_process_until_the_try_deadline(hook: Any, clock: FakeClock) -> None:
    hook.wait_for_completion.return_value = COMPLETED
    started = clock.now - 20
    result = operator(deferrable=False, poll_interval=2, timeout=50).execute(task_context(started_at=started))
    assert result == {**SENT, **COMPLETED.to_dict(), "reused": False}
    (job,), kwargs = hook.wait_for_completion.call_args
    assert (job, kwargs["poll_interval"]) == (JOB, 2.0)
    # The try started 20 s ago: 30 s of the 50 are left, as in the deferrable path.
    assert kwargs["timeout"] == pytest.approx(30)


def test_not_deferrable_job_error_fails_normally_so_retries_resubmit(hook: Any) -> None:
    hook.wait_for_completion.side_effect = HitPawJobFailedError("ended with status ERROR")
    with pytest.raises(HitPawJobFailedError):
        operator(deferrable=False).execute(task_context())


@pytest.mark.parametrize(
    ("error", "fails_without_retry"),
    [
        (HitPawAuthenticationError("api_key is not valid", code=110400000, http_status=400), True),
        (HitPawInsufficientCoinsError("The coins are not enough", code=110402000, http_status=402), True),
        (HitPawServerError("Internal error", code=100500000, http_status=500), False),
    ],
    ids=["bad-key", "no-coins", "server-error-after-retries"],
)
def test_submission_errors(hook: Any, error: Exception, fails_without_retry: bool) -> None:
    hook.submit_segmentation.side_effect = error
    expected = AirflowFailException if fails_without_retry else type(error)
    with pytest.raises(expected) as raised:
        operator().execute(task_context())
    assert str(getattr(error, "code", "")) in str(raised.value)


@pytest.mark.parametrize(
    "file_url",
    [
        "",
        "   ",
        "ftp://h/a.jpg",
        "file:///tmp/a.jpg",
        "javascript:alert(1)",
        "images/a.jpg",
        "https://h/a.gif",
    ],
    ids=["empty", "blank", "ftp", "file", "javascript", "relative", "gif"],
)
def test_bad_url_fails_before_any_request(hook: Any, file_url: str) -> None:
    with pytest.raises(AirflowFailException, match="file_url"):
        operator(file_url=file_url).execute(task_context())
    hook.submit_segmentation.assert_not_called()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": -3}, "poll_interval"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": 0}, "timeout"),
    ],
    ids=["zero-poll", "negative-poll", "negative-timeout", "zero-timeout"],
)
def test_bad_arguments_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        operator(**kwargs)


class TestExecuteComplete:
    def event(self, **overrides: Any) -> dict[str, Any]:
        return {
            "status": "success",
            "job_id": JOB,
            "message": "done",
            "job_status": "COMPLETED",
            "res_url": "http://h/r.png",
            "mask_url": "http://h/m.png",
            "original_url": URL,
            **overrides,
        }

    def test_success_merges_submission_and_status(self) -> None:
        result = operator().execute_complete(task_context(), self.event(), submission=SUBMISSION)
        assert result == {**SUBMISSION, **COMPLETED.to_dict(), "reused": False}

    def test_job_error_fails_normally(self) -> None:
        with pytest.raises(HitPawJobFailedError):
            operator().execute_complete(
                task_context(), self.event(status="error", job_status="ERROR"), submission=SUBMISSION
            )

    def test_timeout_fails_normally_where_the_retry_finds_the_job(self) -> None:
        with pytest.raises(HitPawTimeoutError):
            operator().execute_complete(
                task_context(store=FakeStateStore()),
                self.event(status="timeout", job_status="CONVERTING"),
                submission=SUBMISSION,
            )

    def test_timeout_is_final_where_a_retry_would_pay_again(self) -> None:
        """Without a ledger a retry cannot find the paid job: it once retried, and paid again."""
        with pytest.raises(AirflowFailException) as raised:
            operator().execute_complete(
                task_context(), self.event(status="timeout", job_status="CONVERTING"), submission=SUBMISSION
            )
        assert "not retried automatically: job 'job-1'" in str(raised.value)
        assert "a retry would pay for the image again" in str(raised.value)

    def test_permanent_api_error_fails_without_retry(self) -> None:
        event = self.event(
            status="error", job_status=None, message="Token is expired", code=100401000, http_status=401
        )
        with pytest.raises(AirflowFailException, match="100401000"):
            operator().execute_complete(task_context(), event, submission=SUBMISSION)

    def test_submission_from_the_state_store_when_airflow_dropped_the_kwargs(self, hook: Any) -> None:
        store = FakeStateStore()
        with pytest.raises(TaskDeferred):
            operator().execute(task_context(store=store))
        result = operator().execute_complete(task_context(store=store), self.event())
        # The ledger keeps the job and its price (not when it was sent: no duration is measured).
        assert result == {**SUBMISSION, **COMPLETED.to_dict(), "reused": False}

    def test_without_kwargs_or_store_the_cost_is_unknown_not_invented(self) -> None:
        result = operator().execute_complete(task_context(), self.event())
        assert result == {**SUBMISSION, "consume_coins": None, **COMPLETED.to_dict(), "reused": False}

    def test_missing_event(self) -> None:
        with pytest.raises(HitPawResponseError, match="no usable event"):
            operator().execute_complete(task_context(store=FakeStateStore()), None, submission=SUBMISSION)
        with pytest.raises(AirflowFailException, match="no usable event"):  # a retry would pay again
            operator().execute_complete(task_context(), None, submission=SUBMISSION)


class TestRetryDoesNotPayTwice:
    """A retry finds the job of the earlier try in the ledger, here in Airflow's task state store (3.3).

    Each first try below defers and is never resumed (the worker, or the triggerer, died): a try that
    ends well has no retry, and drops its ledger.
    """

    def test_submission_is_remembered(self, hook: Any) -> None:
        import logging

        from airflow_provider_hitpaw._ledger import State
        from airflow_provider_hitpaw._ledger_store import LedgerStore

        store = FakeStateStore()
        with pytest.raises(TaskDeferred):
            operator().execute(task_context(store=store))
        ledger = LedgerStore.for_task(task_context(store=store), None, logging.getLogger()).load()
        entry = ledger.entry(URL)
        assert entry is not None
        assert (entry.state, entry.job_id, entry.coins) == (State.SUBMITTED, JOB, 20)
        assert URL not in repr(store.values), "the ledger names inputs by a digest only"

    def test_retry_waits_for_the_running_job(self, hook: Any) -> None:
        store = FakeStateStore()
        with pytest.raises(TaskDeferred):
            operator().execute(task_context(store=store))
        hook.get_task_status.return_value = CONVERTING
        with pytest.raises(TaskDeferred) as deferred:
            operator().execute(task_context(store=store))
        assert hook.submit_segmentation.call_count == 1
        assert deferred.value.kwargs == {"submission": SUBMISSION}

    def test_retry_returns_a_finished_job_at_once(self, hook: Any) -> None:
        store = FakeStateStore()
        with pytest.raises(TaskDeferred):
            operator().execute(task_context(store=store))
        hook.get_task_status.return_value = COMPLETED
        assert operator().execute(task_context(store=store)) == {
            **SUBMISSION,
            **COMPLETED.to_dict(),
            "reused": False,
        }
        assert hook.submit_segmentation.call_count == 1

    @pytest.mark.parametrize(
        "earlier",
        [
            {"return_value": TaskStatus(job_id=JOB, status="ERROR")},
            {"side_effect": HitPawInvalidRequestError("Bad Request", code=100400002, http_status=400)},
        ],
        ids=["job-error", "job-gone"],
    )
    def test_retry_submits_again_when_the_earlier_job_cannot_end_well(
        self, hook: Any, earlier: dict[str, Any]
    ) -> None:
        store = FakeStateStore()
        with pytest.raises(TaskDeferred):
            operator().execute(task_context(store=store))
        hook.get_task_status.configure_mock(**earlier)
        operator(wait_for_completion=False).execute(task_context(store=store))
        assert hook.submit_segmentation.call_count == 2

    @pytest.mark.parametrize("http_status", [404, 409])
    def test_a_gateways_bare_refusal_of_the_poll_fails_the_try_instead_of_paying_again(
        self, hook: Any, http_status: int
    ) -> None:
        """A bare 404 or 409 (a gateway, a deploy) once read as "HitPaw forgot the job": paid twice."""
        store = FakeStateStore()
        with pytest.raises(TaskDeferred):
            operator().execute(task_context(store=store))
        hook.get_task_status.side_effect = HitPawInvalidRequestError(
            f"HTTP {http_status} without a HitPaw answer", http_status=http_status
        )
        with pytest.raises(Exception, match=f"HTTP {http_status}"):
            operator(wait_for_completion=False).execute(task_context(store=store))
        assert hook.submit_segmentation.call_count == 1

    def test_a_different_url_is_a_new_submission(self, hook: Any) -> None:
        store = FakeStateStore()
        operator(wait_for_completion=False).execute(task_context(store=store))
        operator(file_url="https://images.example.test/other.png", wait_for_completion=False).execute(
            task_context(store=store)
        )
        assert hook.submit_segmentation.call_count == 2
        hook.get_task_status.assert_not_called()

    def test_clearing_the_task_starts_over(self, hook: Any) -> None:
        """Clearing raises max_tries: the user asks for a new run, not for the old job."""
        store = FakeStateStore()
        operator(wait_for_completion=False).execute(task_context(store=store, max_tries=2))
        hook.get_task_status.return_value = CONVERTING
        operator(wait_for_completion=False).execute(task_context(store=store, max_tries=5))
        assert hook.submit_segmentation.call_count == 2
        hook.get_task_status.assert_not_called()

    def test_a_store_that_fails_to_write_does_not_lose_the_paid_job(self, hook: Any, log_text: Any) -> None:
        """A failing write once escaped before the job was logged or deferred on: the paid job was known
        nowhere, and the retry paid again."""

        class FailingStore(FakeStateStore):
            def set(self, key: str, value: Any, **kwargs: Any) -> None:
                raise RuntimeError("API server answered 503")

        with pytest.raises(TaskDeferred) as deferred:
            operator().execute(task_context(store=FailingStore()))
        assert deferred.value.trigger.job_id == SENT["job_id"]  # the try goes on waiting for it
        # And finishes: counting the job's end in the metrics reads and writes the same store.
        hook.wait_for_completion.return_value = COMPLETED
        result = operator(deferrable=False).execute(task_context(store=FailingStore()))
        assert result["status"] == "COMPLETED"
        logged = log_text()
        assert f"as job {SENT['job_id']!r}" in logged
        assert "(RuntimeError: API server answered 503)" in logged
        assert f"Job {SENT['job_id']!r} could not be recorded in Airflow's task state store" in logged
        assert "would pay for the image again" in logged

    def test_without_a_store_every_try_submits(self, hook: Any) -> None:
        for _ in range(2):
            operator(wait_for_completion=False).execute(task_context())
        assert hook.submit_segmentation.call_count == 2

    def test_without_a_store_a_retry_says_it_pays_again(self, hook: Any, log_text: Any) -> None:
        """Airflow 2.11 and 3.0 to 3.2: the weaker guarantee is logged where it costs coins."""
        operator(wait_for_completion=False, retries=1).execute(task_context(max_tries=1, try_number=1))
        assert "pays for) the image again" not in log_text()
        operator(wait_for_completion=False, retries=1).execute(task_context(max_tries=1, try_number=2))
        assert "this retry cannot find the job an earlier try may have paid for" in log_text()
        assert hook.submit_segmentation.call_count == 2


def test_file_url_is_templated_and_mappable() -> None:
    from airflow.providers.common.compat.sdk import DAG

    assert "file_url" in SegmentImageOperator.template_fields
    with DAG(dag_id="mapped", schedule=None):
        mapped = SegmentImageOperator.partial(task_id="segment", poll_interval=2).expand(
            file_url=["https://h/a.jpg", "https://h/b.png"]
        )
    assert mapped.partial_kwargs["poll_interval"] == 2
    assert mapped.expand_input.value == {"file_url": ["https://h/a.jpg", "https://h/b.png"]}


def test_no_secret_in_xcom_trigger_or_logs(hook: Any, hitpaw_conn: str, log_text: Any) -> None:
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(task_context())
    result = operator().execute_complete(task_context(), TestExecuteComplete().event(), submission=SUBMISSION)
    assert SECRET_KEY not in repr(result)
    assert SECRET_KEY not in repr(deferred.value.trigger.serialize())
    assert SECRET_KEY not in repr(deferred.value.kwargs)
    assert SECRET_KEY not in log_text()


def test_emit_asset_declares_the_output_folder_on_this_airflow() -> None:
    """An Asset on Airflow 3, a Dataset on 2.11: either way downstream DAGs can be scheduled on it."""
    op = operator(output_path="file:///data/cutouts/", emit_asset=True)
    (asset,) = op.outlets
    assert asset.uri.startswith("file:///data/cutouts")
    assert type(asset).__name__ in ("Asset", "Dataset")
    assert [type(link).__name__ for link in op.operator_extra_links] == ["HitPawCutoutLink", "HitPawMaskLink"]


# --- a deferral that Airflow ends itself ----------------------------------------------------------------


class TestDeferralEndedByAirflow:
    @pytest.mark.parametrize("store", [True, False], ids=["store", "no-store"])
    def test_names_the_paid_job_and_the_likely_cause(self, store: bool) -> None:
        """A forgotten triggerer once ended in a bare TaskDeferralTimeout, saying nothing of the job; and
        where no ledger is kept, the retry it allowed paid for the image again."""
        context = task_context(store=FakeStateStore() if store else None)
        context["ti"].xcom_push(key="hitpaw_submission", value=SUBMISSION)
        with pytest.raises(HitPawTimeoutError if store else AirflowFailException) as raised:
            operator().resume_execution("__fail__", TIMED_OUT, context)
        message = str(raised.value)
        assert repr(JOB) in message
        assert "already paid for" in message
        assert "airflow triggerer" in message
        assert ("a retry would pay for the image again" in message) is not store

    def test_a_failed_trigger_says_so(self) -> None:
        with pytest.raises(HitPawTimeoutError, match="its trigger failed"):
            operator().resume_execution("__fail__", {"error": "Trigger failure"}, task_context())

    def test_a_normal_resume_is_untouched(self) -> None:
        event = {"status": "success", "job_id": JOB, "message": "", "job_status": "COMPLETED"}
        result = operator().resume_execution(
            "execute_complete", {"event": event, "submission": SUBMISSION}, task_context()
        )
        assert result["job_id"] == JOB


@pytest.mark.parametrize(("hold", "expected"), [(None, 10.0), (4, 4.0), (0, None)])
def test_the_trigger_holds_its_event_past_the_deferral(
    hook: Any, monkeypatch: pytest.MonkeyPatch, clock: FakeClock, hold: float | None, expected: float | None
) -> None:
    """By default the event waits 10 s after the deferral (an Airflow race fails earlier resumes)."""
    from airflow_provider_hitpaw import _deferral

    monkeypatch.setattr(_deferral, "EVENT_HOLD_SECONDS", 10.0)
    monkeypatch.delenv("AIRFLOW__HITPAW__MIN_DEFERRED_SECONDS")  # the provider's own default
    with pytest.raises(TaskDeferred) as deferred:
        operator(min_deferred_seconds=hold).execute(task_context())
    not_before = deferred.value.trigger.not_before
    if expected is None:
        assert not_before is None
    else:
        assert not_before == clock.now + expected


@pytest.mark.parametrize("hold", [-1, 51, float("nan"), "10"])
def test_a_hold_past_airflows_backstop_is_refused(hold: Any) -> None:
    with pytest.raises(ValueError, match="min_deferred_seconds"):
        operator(min_deferred_seconds=hold)


def test_a_deployment_sets_the_hold_for_every_task(
    hook: Any, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    from airflow_provider_hitpaw import _deferral

    monkeypatch.setattr(_deferral, "EVENT_HOLD_SECONDS", 10.0)
    monkeypatch.setenv("AIRFLOW__HITPAW__MIN_DEFERRED_SECONDS", "25")
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(task_context())
    assert deferred.value.trigger.not_before == clock.now + 25
    monkeypatch.setenv("AIRFLOW__HITPAW__MIN_DEFERRED_SECONDS", "soon")  # not a number: the default holds
    with pytest.raises(TaskDeferred) as deferred:
        operator().execute(task_context())
    assert deferred.value.trigger.not_before == clock.now + 10


# --- results already in output_path under overwrite="fail" --------------------------------------------


def tiny_png() -> bytes:
    """A whole, well-formed 1x1 PNG: what a download of a result must be."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\0\0\0\0\0")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture
def downloads(hook: Any) -> Any:
    """The hook double downloads a result link as the real one does: a PNG, in one attempt."""
    from airflow_provider_hitpaw import _api
    from airflow_provider_hitpaw.hooks import _transport

    def download_once(url: str, write: Any, attempts: Any) -> int:
        write(tiny_png())
        return len(tiny_png())

    hook.download_attempts.side_effect = lambda what: _transport.Attempts(
        _api.RetryPolicy(max_attempts=1), what=what
    )
    hook.download_once.side_effect = download_once
    return hook


class Killed(BaseException):
    """SIGKILL, as seen from inside the process: nothing after it runs."""


def crashed_after_keeping(task: SegmentImageOperator, context: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Run ``task`` until its results are kept, then kill it (before it can say it ended well); return
    what it kept."""
    kept: dict[str, Any] = {}
    real = task._output

    def output() -> Any:
        found = real()

        class Keeping:
            def __getattr__(self, name: str) -> Any:
                return getattr(found, name)

            def persist(self, *args: Any, **kwargs: Any) -> Any:
                kept.update(found.persist(*args, **kwargs))
                raise Killed

        return Keeping()

    monkeypatch.setattr(task, "_output", output)
    with pytest.raises(Killed):
        task.execute(context)
    return kept


def outside_the_ledger(folder: Any) -> list[Any]:
    """What a folder holds beside the ledger a failed try leaves for its retry."""
    return [path for path in folder.iterdir() if not path.name.startswith(".hitpaw-")]


class TestFailOnExistingResults:
    """overwrite="fail" once submitted, paid and waited, and only then refused to keep."""

    def test_existing_results_are_refused_before_any_coin(self, hook: Any, tmp_path: Any) -> None:
        from airflow_provider_hitpaw.storage import result_names

        cutout, _ = result_names(URL)
        (tmp_path / cutout).write_bytes(b"an earlier run's cut-out")
        with pytest.raises(AirflowFailException, match="already exists") as raised:
            operator(output_path=str(tmp_path), overwrite="fail").execute(task_context())
        assert "output_path" in str(raised.value)
        hook.submit_segmentation.assert_not_called()
        hook.presign_upload.assert_not_called()
        assert (tmp_path / cutout).read_bytes() == b"an earlier run's cut-out"

    def test_a_retry_accepts_what_its_own_job_kept(
        self, downloads: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The first try kept the pair, then failed (a crash, a lost heartbeat): the retry waits for the
        same job, and its own files are no reason to fail."""
        store = FakeStateStore()
        downloads.wait_for_completion.return_value = COMPLETED
        first = operator(output_path=str(tmp_path), overwrite="fail", deferrable=False)
        kept = crashed_after_keeping(first, task_context(store=store), monkeypatch)
        downloads.get_task_status.return_value = COMPLETED
        again = operator(output_path=str(tmp_path), overwrite="fail", deferrable=False)
        result = again.execute(task_context(store=store))
        assert downloads.submit_segmentation.call_count == 1
        assert (result["res_path"], result["mask_path"]) == (kept["res_path"], kept["mask_path"])

    def test_a_retry_whose_job_is_gone_is_refused_before_paying_again(
        self, downloads: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The earlier job's files excuse only that job: a new submission's would be refused after paying."""
        store = FakeStateStore()
        downloads.wait_for_completion.return_value = COMPLETED
        first = operator(output_path=str(tmp_path), overwrite="fail", deferrable=False)
        crashed_after_keeping(first, task_context(store=store), monkeypatch)
        downloads.get_task_status.side_effect = HitPawInvalidRequestError(
            "Bad Request", code=100400002, http_status=400
        )
        with pytest.raises(AirflowFailException, match="already exists"):
            operator(output_path=str(tmp_path), overwrite="fail").execute(task_context(store=store))
        assert downloads.submit_segmentation.call_count == 1

    def test_a_new_run_is_refused_what_another_job_kept(self, downloads: Any, tmp_path: Any) -> None:
        downloads.wait_for_completion.return_value = COMPLETED
        operator(output_path=str(tmp_path), overwrite="fail", deferrable=False).execute(task_context())
        with pytest.raises(AirflowFailException, match="already exists"):
            operator(output_path=str(tmp_path), overwrite="fail").execute(
                task_context(store=FakeStateStore(), run_id="run-2")
            )
        assert downloads.submit_segmentation.call_count == 1


# --- storage that fails after the job was paid for ----------------------------------------------------

SIGNED_RESULT = TaskStatus(
    job_id=JOB,
    status="COMPLETED",
    res_url="https://results.example.test/out/c.png?Signature=SIGNED-SECRET&Expires=1",
    mask_url="https://results.example.test/out/m.png?Signature=SIGNED-SECRET&Expires=1",
    original_url=URL,
)


@pytest.mark.parametrize("failure", ["bucket-vanished-on-upload", "write-refused"])
def test_storage_that_fails_after_paying_says_which_job_completed_and_where_its_results_are(
    downloads: Any, memory_root: str, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """An object store uploads on close: a bucket gone since the probe once escaped as a bare
    FileNotFoundError; a refused write said nothing of the job paid for."""
    from fsspec.implementations.memory import MemoryFile, MemoryFileSystem

    from airflow_provider_hitpaw.exceptions import HitPawStorageError

    downloads.wait_for_completion.return_value = SIGNED_RESULT
    if failure == "bucket-vanished-on-upload":

        def close(self: Any) -> None:
            if ".partial-" in str(self.path) and self.getbuffer().nbytes:
                raise FileNotFoundError("The specified bucket does not exist")

        monkeypatch.setattr(MemoryFile, "close", close)
    else:
        real_open = MemoryFileSystem._open

        def refusing_open(self: Any, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            if ".partial-" in path and "w" in mode:
                raise PermissionError("Access Denied")
            return real_open(self, path, mode, **kwargs)

        monkeypatch.setattr(MemoryFileSystem, "_open", refusing_open)
    with pytest.raises(Exception, match="could not be kept") as raised:
        operator(output_path=f"{memory_root}/out", deferrable=False).execute(task_context())
    failure_raised = raised.value
    error = failure_raised if isinstance(failure_raised, HitPawStorageError) else failure_raised.__cause__
    assert isinstance(error, HitPawStorageError), repr(failure_raised)
    said = str(failure_raised)
    assert f"job {JOB!r} completed" in said
    assert "https://results.example.test/out/c.png" in said
    assert "https://results.example.test/out/m.png" in said
    assert "SIGNED-SECRET" not in said
    assert "Signature" not in said
    assert downloads.submit_segmentation.call_count == 1


# --- a job that is another image's ---------------------------------------------------------------------

OTHER_IMAGE = "https://images.example.test/someone-else.jpg"


class TestBoundToItsInput:
    """One job id answered for two images (a broken or hostile base URL) gave the second image's folder
    the first image's cut-out."""

    def test_a_job_of_another_image_is_refused_and_nothing_is_kept(
        self, downloads: Any, tmp_path: Any
    ) -> None:
        from airflow_provider_hitpaw.exceptions import HitPawUntrustedAnswerError

        downloads.wait_for_completion.return_value = TaskStatus(
            job_id=JOB,
            status="COMPLETED",
            res_url="http://h/r.png",
            mask_url="http://h/m.png",
            original_url=OTHER_IMAGE + "?token=SIGNED-SECRET",
        )
        with pytest.raises(AirflowFailException) as raised:
            operator(output_path=str(tmp_path), deferrable=False).execute(task_context())
        assert isinstance(raised.value.__cause__, HitPawUntrustedAnswerError)
        assert OTHER_IMAGE in str(raised.value)
        assert "SIGNED-SECRET" not in str(raised.value)
        assert outside_the_ledger(tmp_path) == []
        downloads.download_once.assert_not_called()

    def test_a_resumed_task_refuses_an_event_of_another_image(self, tmp_path: Any) -> None:
        event = TestExecuteComplete().event(original_url=OTHER_IMAGE)
        with pytest.raises(AirflowFailException, match="one job cannot be two images"):
            operator(output_path=str(tmp_path)).execute_complete(task_context(), event, submission=SUBMISSION)
        assert outside_the_ledger(tmp_path) == []

    @pytest.mark.parametrize(
        ("submitted", "answered"),
        [
            ("https://images.example.test/my photo.jpg", "https://images.example.test/my%20photo.jpg"),
            ("https://images.example.test/été.jpg", "https://IMAGES.example.test:443/%c3%a9t%C3%A9.jpg"),
            ("https://b.example.test/k.jpg?X-Amz-Signature=a%2Bb", "https://b.example.test/k.jpg"),
        ],
        ids=["encoded-space", "encoded-letters-and-default-port", "signature-dropped"],
    )
    def test_the_same_image_written_otherwise_is_accepted(self, submitted: str, answered: str) -> None:
        event = TestExecuteComplete().event(original_url=answered)
        result = operator(file_url=submitted).execute_complete(
            task_context(), event, submission={**SUBMISSION, "file_url": submitted}
        )
        assert result["status"] == "COMPLETED"


# --- a poll that failed is not a job that failed -------------------------------------------------------

#: What the trigger sends when a poll failed for good without HitPaw saying anything of the job: a
#: gateway's bare 404 (an event of this shape, ``unreadable`` aside, once failed the task for good).
UNREADABLE_EVENT = {
    "status": "error",
    "job_id": JOB,
    "message": (
        "polling HitPaw job 'job-1' failed (HitPawInvalidRequestError: (HTTP 404) Not Found); the job "
        "itself has not failed (last seen CONVERTING): it is paid for and may still complete"
    ),
    "job_status": "CONVERTING",
    "res_url": None,
    "mask_url": None,
    "original_url": None,
    "code": None,
    "http_status": 404,
    "error_type": "HitPawInvalidRequestError",
    "unreadable": True,
}


class TestAPollThatFailedIsNotAJobThatFailed:
    def test_with_a_store_the_failure_is_retried_and_the_retry_waits_for_the_same_job(
        self, hook: Any
    ) -> None:
        store = FakeStateStore()
        with pytest.raises(TaskDeferred) as deferred:
            operator().execute(task_context(store=store))
        with pytest.raises(Exception, match="the job itself has not failed") as raised:
            operator().execute_complete(task_context(store=store), UNREADABLE_EVENT, **deferred.value.kwargs)
        assert not isinstance(raised.value, AirflowFailException | HitPawJobFailedError)
        assert type(raised.value).__name__ == "HitPawInvalidRequestError"
        assert "HTTP 404" in str(raised.value)
        assert "waits for job 'job-1' instead of paying again" in str(raised.value)
        hook.get_task_status.return_value = CONVERTING
        with pytest.raises(TaskDeferred):
            operator().execute(task_context(store=store))
        assert hook.submit_segmentation.call_count == 1

    def test_without_a_store_the_failure_is_final_and_names_the_paid_job(self, hook: Any) -> None:
        with pytest.raises(TaskDeferred) as deferred:
            operator().execute(task_context())
        with pytest.raises(AirflowFailException) as raised:
            operator().execute_complete(task_context(), UNREADABLE_EVENT, **deferred.value.kwargs)
        said = str(raised.value)
        assert "not retried automatically: job 'job-1'" in said
        assert "a retry would pay for the image again" in said
        assert "HTTP 404" in said
        assert "ended with status ERROR" not in said

    @pytest.mark.parametrize("store", [True, False], ids=["store", "no-store"])
    def test_the_blocking_wait_follows_the_same_rule(self, hook: Any, store: bool) -> None:
        from airflow_provider_hitpaw.exceptions import HitPawUntrustedAnswerError

        hook.wait_for_completion.side_effect = HitPawUntrustedAnswerError("the answer is over the 1 MiB cap")
        context = task_context(store=FakeStateStore() if store else None)
        with pytest.raises(Exception, match="over the 1 MiB cap") as raised:
            operator(deferrable=False).execute(context)
        assert isinstance(raised.value, AirflowFailException) is not store
        assert "over the 1 MiB cap" in str(raised.value)
        assert not isinstance(raised.value, HitPawJobFailedError)
        if store:
            assert "a retry of this task waits for job 'job-1' instead of paying again" in str(raised.value)
        else:
            assert "a retry would pay for the image again" in str(raised.value)

    @pytest.mark.parametrize("http_status", [404, 409])
    def test_a_retry_whose_look_at_the_earlier_job_fails_is_retried_again(
        self, hook: Any, http_status: int
    ) -> None:
        store = FakeStateStore()
        with pytest.raises(TaskDeferred):
            operator().execute(task_context(store=store))
        hook.get_task_status.side_effect = HitPawInvalidRequestError(
            f"HTTP {http_status} without a HitPaw answer", http_status=http_status
        )
        with pytest.raises(HitPawInvalidRequestError, match=f"HTTP {http_status}"):
            operator(wait_for_completion=False).execute(task_context(store=store))
        assert hook.submit_segmentation.call_count == 1


# --- what a run pays across its tries: the ledger, against the emulator's books ------------------------

COST = 20


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-off in hundredths of seconds: the hook's retries are not what these tests look at."""
    from airflow_provider_hitpaw import _api
    from airflow_provider_hitpaw.hooks import hitpaw as hooks

    real = hooks._HitPawHookBase.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("retry_policy", _api.RetryPolicy(base_delay=0.01, max_delay=0.05))
        real(self, *args, **kwargs)

    monkeypatch.setattr(hooks._HitPawHookBase, "__init__", init)


class Books:
    """What HitPaw (the emulator) charged since the test began: its coins are the truth, also for a job
    it has forgotten since."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator
        self.start = emulator.state()["coins"]

    @property
    def charged(self) -> int:
        return int(self.start - self.emulator.state()["coins"])

    @property
    def jobs(self) -> int:
        return self.charged // COST


def one_image(emulator: Any, **kwargs: Any) -> SegmentImageOperator:
    return SegmentImageOperator(
        **{"task_id": "segment", "file_url": emulator.sample_url("shoe.jpg"), "poll_interval": 1, **kwargs}
    )


def deferred_job(task: SegmentImageOperator, context: Any) -> str:
    """A first try that submits and defers; its worker, or the triggerer, then dies."""
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context)
    return str(deferred.value.trigger.job_id)


@pytest.mark.usefixtures("quick_retries")
class TestWhatARetryPays:
    @pytest.mark.parametrize("store", [False, True], ids=["before-3.3", "3.3"])
    def test_with_an_output_path_a_retry_finds_its_job_on_any_airflow(
        self, hitpaw_emulator: Any, tmp_path: Any, store: bool
    ) -> None:
        """Before Airflow 3.3 a retry submitted (and paid for) the image again: no task state store; the
        ledger in the output folder is found on every line."""
        from tests.conftest import run_deferred

        books = Books(hitpaw_emulator)
        states = FakeStateStore() if store else None
        task = one_image(hitpaw_emulator, output_path=str(tmp_path))
        job = deferred_job(task, task_context(store=states))
        result = run_deferred(task, task_context(store=states, try_number=2))
        assert (result["status"], result["job_id"]) == ("COMPLETED", job)
        assert books.jobs == 1
        assert result["consume_coins"] == books.charged == COST
        again = task.execute(task_context(store=states, try_number=3))  # lost after it ended well
        assert again["job_id"] == job
        assert books.jobs == 1

    @pytest.mark.parametrize("where", ["output-path", "task-state-store"])
    def test_a_lost_answer_is_not_sent_again_by_a_retry(
        self, hitpaw_emulator: Any, tmp_path: Any, where: str
    ) -> None:
        """The hook sends a lost submission once more; each retry then sent it (and paid) again."""
        hitpaw_emulator.set_faults(["drop:first_n=2,after_commit=true,paths=/api/image-segmentation"])
        books = Books(hitpaw_emulator)
        states = FakeStateStore() if where == "task-state-store" else None
        output = str(tmp_path) if where == "output-path" else None
        task = one_image(hitpaw_emulator, output_path=output)
        with pytest.raises(AirflowFailException, match="may have accepted the image"):
            task.execute(task_context(store=states))
        paid = books.charged
        assert paid == 2 * COST  # the lost answer, and the hook's one resend
        for try_number in (2, 3):
            with pytest.raises(AirflowFailException, match="not submitted again") as raised:
                task.execute(task_context(store=states, try_number=try_number))
            assert "clear the task" in str(raised.value)
        assert books.charged == paid

    def test_a_job_hitpaw_forgot_is_paid_again_and_both_are_reported(self, hitpaw_emulator: Any) -> None:
        """A retry that submitted again reported the second job's coins alone: 20 said, 40 paid."""
        from tests.conftest import run_deferred

        books = Books(hitpaw_emulator)
        store = FakeStateStore()
        task = one_image(hitpaw_emulator)
        job = deferred_job(task, task_context(store=store))
        assert hitpaw_emulator.expire_job(job)
        result = run_deferred(task, task_context(store=store, try_number=2))
        assert result["status"] == "COMPLETED"
        assert result["job_id"] != job
        assert books.jobs == 2
        assert result["consume_coins"] == books.charged == 2 * COST

    def test_a_job_that_ended_in_error_fails_the_try_and_the_retry_reports_both(
        self, hitpaw_emulator: Any
    ) -> None:
        """The try that saw ERROR fails (retried: a new job is no double charge); its retry pays again."""
        from airflow_provider_hitpaw.exceptions import HitPawJobFailedError
        from tests.conftest import run_deferred

        books = Books(hitpaw_emulator)
        store = FakeStateStore()
        task = one_image(hitpaw_emulator)
        job = deferred_job(task, task_context(store=store))
        assert hitpaw_emulator.fail_job(job)
        with pytest.raises(HitPawJobFailedError):
            run_deferred(task, task_context(store=store))
        result = run_deferred(task, task_context(store=store, try_number=2))
        assert result["status"] == "COMPLETED"
        assert result["consume_coins"] == books.charged == 2 * COST

    def test_under_skip_a_retry_reports_what_its_first_try_paid(
        self, hitpaw_emulator: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A retry took its own first try's pair for an earlier run's: reused, 0 coins, while it paid 20."""
        books = Books(hitpaw_emulator)
        task = one_image(hitpaw_emulator, output_path=str(tmp_path), overwrite="skip", deferrable=False)
        crashed_after_keeping(task, task_context(), monkeypatch)
        again = one_image(hitpaw_emulator, output_path=str(tmp_path), overwrite="skip", deferrable=False)
        result = again.execute(task_context(try_number=2))
        assert result["reused"] is False
        assert result["consume_coins"] == books.charged == COST

    def test_a_job_recorded_by_the_version_before_the_ledger_is_waited_for(
        self, hitpaw_emulator: Any
    ) -> None:
        """A retry across an upgrade on Airflow 3.3 finds the job the older version recorded."""
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook
        from tests.conftest import run_deferred

        url = hitpaw_emulator.sample_url("shoe.jpg")
        with HitPawHook() as hook:
            job = hook.submit_segmentation(url)
        books = Books(hitpaw_emulator)
        store = FakeStateStore()
        old = {"job_id": job.job_id, "consume_coins": job.consume_coins, "file_url": url, "input": url}
        store.set("hitpaw_submitted_job", {"value": old, "max_tries": 2})
        result = run_deferred(one_image(hitpaw_emulator), task_context(store=store, try_number=2))
        assert result["job_id"] == job.job_id
        assert books.charged == 0


class TestTheFailureRuleAfterPaying:
    """A try that fails after paying is retried only where its retry finds the job."""

    def test_with_an_output_path_a_failure_after_paying_is_retried_on_any_airflow(
        self, hook: Any, tmp_path: Any
    ) -> None:
        with pytest.raises(TaskDeferred) as deferred:
            operator(output_path=str(tmp_path)).execute(task_context())
        with pytest.raises(HitPawTimeoutError):
            operator(output_path=str(tmp_path)).execute_complete(
                task_context(),
                TestExecuteComplete().event(status="timeout", job_status="CONVERTING"),
                **deferred.value.kwargs,
            )

    def test_a_ledger_that_cannot_be_saved_makes_it_final(self, hook: Any, log_text: Any) -> None:
        class FailingStore(FakeStateStore):
            def set(self, key: str, value: Any, **kwargs: Any) -> None:
                raise RuntimeError("API server answered 503")

        with pytest.raises(TaskDeferred) as deferred:
            operator().execute(task_context(store=FailingStore()))
        with pytest.raises(AirflowFailException) as raised:
            operator().execute_complete(
                task_context(store=FailingStore()),
                TestExecuteComplete().event(status="timeout", job_status="CONVERTING"),
                **deferred.value.kwargs,
            )
        assert "saving its record to Airflow's task state store failed" in str(raised.value)
        assert "not retried automatically: job 'job-1'" in str(raised.value)


class TestCatalogueFolders:
    def test_a_mapped_sku_keeps_its_folder_and_is_reused_by_the_next_run(
        self, hitpaw_emulator: Any, tmp_path: Any
    ) -> None:
        url = hitpaw_emulator.sample_url("shoe.jpg")
        root = url.rsplit("/", 2)[0]
        kwargs = {"output_path": str(tmp_path), "output_layout": "mirror", "input_root": root}
        result = run_deferred(one_image(hitpaw_emulator, **kwargs, overwrite="skip"), task_context())
        below = url.removeprefix(root).lstrip("/").rsplit(".", 1)[0]
        assert result["res_path"] == (tmp_path / f"{below}.png").as_uri()
        assert (tmp_path / f"{below}_mask.png").exists()
        again = one_image(hitpaw_emulator, **kwargs, overwrite="skip").execute(task_context(run_id="run-2"))
        assert again["reused"] is True
        assert len(hitpaw_emulator.state()["jobs"]) == 1

    def test_one_input_must_name_the_root_it_is_mirrored_below(self) -> None:
        with pytest.raises(HitPawConfigurationError, match="input_root"):
            operator(output_path="/data/out", output_layout="mirror")


# --- what a hostile review of the one-image ledger found (each failed on 307b836) -------------------------


def mapped_context(map_index: int, try_number: int = 1) -> dict[str, Any]:
    context = task_context(try_number=try_number)
    context["ti"].map_index = map_index
    return context


@pytest.mark.usefixtures("fast_retries")
class TestWhatAReviewOfTheOneImageLedgerFound:
    @pytest.mark.parametrize("how", ["a-version-2-piece", "an-entry-with-a-ninth-field"])
    def test_a_ledger_of_another_version_fails_the_retry_and_is_kept(
        self, hitpaw_emulator: Any, tmp_path: Any, how: str
    ) -> None:
        """A rolling upgrade: the retry took the other version's piece as not paid for, paid again, and
        its compaction deleted that record."""
        import json

        books = Books(hitpaw_emulator)
        deferred_job(one_image(hitpaw_emulator, output_path=str(tmp_path)), task_context())
        [piece] = sorted((tmp_path / ".hitpaw-ledger").rglob("*.json"))
        saved = json.loads(piece.read_text())
        if how == "a-version-2-piece":
            saved["version"] = 2
        else:
            for entry in saved["entries"].values():
                entry.append({"a field": "a later version adds"})
        piece.write_text(json.dumps(saved))
        with pytest.raises(HitPawStorageError, match="written by another version"):
            one_image(hitpaw_emulator, output_path=str(tmp_path)).execute(task_context(try_number=2))
        assert books.jobs == 1
        assert json.loads(piece.read_text()) == saved

    @pytest.mark.parametrize("where", ["output_path", "task state store"])
    def test_an_execution_timeout_during_the_submission_is_not_paid_again(
        self, hitpaw_emulator: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, where: str
    ) -> None:
        from airflow.providers.common.compat.sdk import AirflowTaskTimeout

        from airflow_provider_hitpaw import _api
        from airflow_provider_hitpaw.hooks import _transport

        books = Books(hitpaw_emulator)
        store = FakeStateStore() if where != "output_path" else None
        output = str(tmp_path) if where == "output_path" else None
        real_post = _transport.post_json_sync

        def post(session: Any, url: str, body: Any, **kwargs: Any) -> Any:
            answer = real_post(session, url, body, **kwargs)
            if url.endswith(_api.SUBMIT_PATH):  # HitPaw charged; the timeout fires before the answer is read
                monkeypatch.setattr(_transport, "post_json_sync", real_post)
                raise AirflowTaskTimeout("Timeout, PID: 1234")
            return answer

        monkeypatch.setattr(_transport, "post_json_sync", post)
        with pytest.raises(AirflowTaskTimeout):
            one_image(hitpaw_emulator, output_path=output).execute(task_context(store=store))
        with pytest.raises(AirflowFailException, match="lost its answer"):
            one_image(hitpaw_emulator, output_path=output).execute(task_context(store=store, try_number=2))
        assert books.jobs == 1

    def test_under_skip_a_mapped_retry_reports_what_it_paid_not_another_tasks_pair(
        self, hitpaw_emulator: Any, tmp_path: Any
    ) -> None:
        """``.partial(output_path=..., overwrite="skip").expand(file_url=[u, u])``: map index 1 paid, its
        worker died, map index 0 kept the pair, and map index 1's retry reported 0 coins, reused."""
        books = Books(hitpaw_emulator)

        def task(**kwargs: Any) -> SegmentImageOperator:
            return one_image(hitpaw_emulator, output_path=str(tmp_path), overwrite="skip", **kwargs)

        paid_by_1 = deferred_job(task(), mapped_context(1))
        done_0 = task(deferrable=False).execute(mapped_context(0))
        retry_1 = task(deferrable=False).execute(mapped_context(1, try_number=2))
        assert retry_1["job_id"] == paid_by_1
        assert retry_1["reused"] is False
        assert done_0["consume_coins"] + retry_1["consume_coins"] == books.charged == 2 * COST

    def test_under_fail_a_retry_refused_after_paying_names_the_job(
        self, hitpaw_emulator: Any, tmp_path: Any
    ) -> None:
        def task(**kwargs: Any) -> SegmentImageOperator:
            return one_image(hitpaw_emulator, output_path=str(tmp_path), overwrite="fail", **kwargs)

        paid_by_1 = deferred_job(task(), mapped_context(1))
        task(deferrable=False).execute(mapped_context(0))
        with pytest.raises(AirflowFailException, match=paid_by_1):
            task().execute(mapped_context(1, try_number=2))

    @pytest.mark.parametrize("overwrite", ["skip", "overwrite", "fail"])
    def test_a_retry_after_keeping_reports_the_pair_though_hitpaw_forgot_the_job(
        self, hitpaw_emulator: Any, tmp_path: Any, overwrite: str
    ) -> None:
        """The pair was never marked kept: the retry asked HitPaw again, and a forgotten job was paid
        again (``skip``, ``overwrite``) or its own pair refused (``fail``)."""
        books = Books(hitpaw_emulator)

        def task() -> SegmentImageOperator:
            return one_image(
                hitpaw_emulator, output_path=str(tmp_path), overwrite=overwrite, deferrable=False
            )

        first = task().execute(task_context())  # kept; the worker is lost before Airflow hears of it
        assert hitpaw_emulator.expire_job(first["job_id"])
        again = task().execute(task_context(try_number=2))
        assert (again["job_id"], again["res_path"], again["reused"]) == (
            first["job_id"],
            first["res_path"],
            False,
        )
        assert again["consume_coins"] == books.charged == COST

    def test_an_old_record_of_a_source_is_neither_kept_nor_paid_again(
        self, hitpaw_emulator: Any, tmp_path: Any
    ) -> None:
        """A record of the version before the ledger names a source by its path only: adopted, the job
        made from the old bytes was kept as the edited file's result."""
        import requests

        from airflow_provider_hitpaw import storage
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

        source = tmp_path / "in" / "photo.jpg"
        source.parent.mkdir()
        old_bytes = requests.get(hitpaw_emulator.sample_url("shoe.jpg"), timeout=10).content
        source.write_bytes(old_bytes)
        with HitPawHook() as hook:
            old_job = hook.submit_segmentation(hitpaw_emulator.sample_url("shoe.jpg"))
        store = FakeStateStore()
        old = {"job_id": old_job.job_id, "consume_coins": 20, "input": storage.input_identity(str(source))}
        context = task_context(store=store, try_number=2)
        store.set("hitpaw_submitted_job", {"value": old, "max_tries": context["ti"].max_tries})
        source.write_bytes(old_bytes + b"edited")
        task = SegmentImageOperator(
            task_id="segment", source_path=str(source), output_path=str(tmp_path / "out"), deferrable=False
        )
        with pytest.raises(AirflowFailException, match=old_job.job_id):
            task.execute(context)
        assert len(hitpaw_emulator.state()["jobs"]) == 1
        assert not list((tmp_path / "out").glob("*.png"))

    def test_a_file_urls_credentials_stay_out_of_xcom_and_the_deferral(self, hitpaw_emulator: Any) -> None:
        import json

        url = hitpaw_emulator.sample_url("shoe.jpg").replace("http://", "http://reader:URL-SECRET@", 1)
        context = task_context()
        with pytest.raises(TaskDeferred) as deferred:
            SegmentImageOperator(task_id="segment", file_url=url).execute(context)
        assert "URL-SECRET" not in json.dumps(context["ti"].xcom)
        assert "URL-SECRET" not in json.dumps(deferred.value.kwargs)
        result = run_deferred(
            SegmentImageOperator(task_id="segment", file_url=url), task_context(run_id="r2")
        )
        assert "URL-SECRET" not in json.dumps(result)

    def test_a_submission_sent_again_reports_what_its_lost_answer_may_have_cost(
        self, hitpaw_emulator: Any
    ) -> None:
        hitpaw_emulator.set_faults(["drop:first_n=1,after_commit=true,paths=/api/image-segmentation"])
        books = Books(hitpaw_emulator)
        result = one_image(hitpaw_emulator, deferrable=False).execute(task_context())
        assert books.charged == 2 * COST
        assert (result["consume_coins"], result["maybe_charged"]) == (COST, 1)


class TestFinishes:
    def test_one_image_is_finished_and_refinished_without_paying(
        self, hitpaw_emulator: Any, tmp_path: Any
    ) -> None:
        from PIL import Image

        finish = {"storefront": {"background": "white", "canvas": "1:1", "format": "jpeg", "max_side": 600}}
        result = run_deferred(
            one_image(hitpaw_emulator, output_path=str(tmp_path), overwrite="skip", finish=finish),
            task_context(),
        )
        path = result["finishes"]["storefront"].removeprefix("file://")
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.width == image.height <= 600
        assert result["suspect"] is None
        bigger = {"storefront": {**finish["storefront"], "max_side": 300}}
        again = one_image(
            hitpaw_emulator, output_path=str(tmp_path), overwrite="skip", finish=bigger
        ).execute(task_context(run_id="run-2"))
        assert again["reused"] is True
        with Image.open(path) as image:
            assert image.width <= 300
        assert len(hitpaw_emulator.state()["jobs"]) == 1


def test_a_resumed_try_reports_a_lost_answer_its_ledger_could_not_keep(hitpaw_emulator: Any) -> None:
    """Found by the one-image state machine: deferrable, no output_path, a store refusing writes (before
    3.3: none at all), the answer lost once and sent again: the resumed try reported no maybe_charged."""
    hitpaw_emulator.set_faults(["drop:first_n=1,after_commit=true,paths=/api/image-segmentation"])
    result = run_deferred(one_image(hitpaw_emulator), task_context())
    assert (result["consume_coins"], result.get("maybe_charged")) == (COST, 1)


@pytest.mark.usefixtures("fast_retries")
def test_a_lost_answer_whose_resend_meets_an_outage_is_not_sent_again_by_a_retry(
    hitpaw_emulator: Any, tmp_path: Any
) -> None:
    """Found by the one-image state machine: the answer was lost after HitPaw charged, the resend met a
    5xx storm, and the hook ended with a plain server error: the retry submitted (and paid) again."""
    hitpaw_emulator.set_faults(
        [
            "drop:after_commit=true,first_n=1,paths=/api/image-segmentation",
            "500:first_n=20,paths=/api/image-segmentation",
        ]
    )
    books = Books(hitpaw_emulator)
    with pytest.raises(AirflowFailException, match="sending it again brought none back"):
        one_image(hitpaw_emulator, output_path=str(tmp_path)).execute(task_context())
    hitpaw_emulator.clear_faults()
    with pytest.raises(AirflowFailException, match="lost its answer"):
        one_image(hitpaw_emulator, output_path=str(tmp_path)).execute(task_context(try_number=2))
    assert books.jobs == 1
