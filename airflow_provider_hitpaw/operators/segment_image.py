"""``SegmentImageOperator``: one image, submitted, waited for (in the triggerer by default), and kept.

DAG files import this module on every parse, so it imports neither HTTP clients nor the hooks at the top:
they are loaded when a task runs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator

from airflow_provider_hitpaw import _api, _deferral, _metrics, _state_store
from airflow_provider_hitpaw._addresses import internal_host_reason
from airflow_provider_hitpaw._connection_form import DEFAULT_CONN_ID
from airflow_provider_hitpaw._events import ErrorInfo, JobEvent, Outcome
from airflow_provider_hitpaw._failures import fail_without_retry, task_failure
from airflow_provider_hitpaw._lineage import lineage
from airflow_provider_hitpaw._results import (
    ResultOutput,
    fingerprint_of,
    made_from_kept,
    push_links,
    result_links,
)
from airflow_provider_hitpaw._state_store import first_try_of_clearing
from airflow_provider_hitpaw._wait import is_unreadable_poll
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawError,
    HitPawJobFailedError,
    HitPawStorageError,
    HitPawSubmissionUnknownError,
    HitPawTimeoutError,
)
from airflow_provider_hitpaw.validation import (
    validate_event_hold,
    validate_file_url,
    validate_poll_interval,
    validate_timeout,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_hitpaw._api import TaskStatus
    from airflow_provider_hitpaw._kept import KeptResult
    from airflow_provider_hitpaw._ledger import Ledger
    from airflow_provider_hitpaw._ledger_store import LedgerStore
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

#: Where versions before the ledger kept the job a try submitted (Airflow 3.3's task state store): read
#: once, when the ledger holds nothing for the input, so that a retry across an upgrade does not pay again.
_SUBMITTED_JOB_KEY = "hitpaw_submitted_job"
#: Where the submission travels across a deferral, on every Airflow line (the XCom of the same try).
SUBMISSION_XCOM_KEY = "hitpaw_submission"
#: Why a failure after paying is final where no ledger is kept (see SegmentImageOperator._failure).
_NO_RECORD = (
    "this task keeps no record of it across tries (no output_path, and no task state store before "
    "Airflow 3.3)"
)


def coins_text(coins: int | None) -> str:
    """What a job cost, for a log line: HitPaw's figure, or that it did not say."""
    return "an unknown number of coins" if coins is None else f"{coins:,} coins"


def allows_internal_hosts(hook: HitPawHook) -> bool:
    """Whether image URLs may be on internal hosts: only when HitPaw's base URL is itself internal (the
    local emulator on 127.0.0.1, a test double on a private network), which can then reach them."""
    return internal_host_reason(hook.settings.base_host) is not None


class SegmentImageOperator(BaseOperator):
    """Submit one image to HitPaw's segmentation and, by default, wait for the cut-out (README: "One task
    per image", "Keep the results, take inputs from any storage").

    Returns (XCom) ``job_id``, ``consume_coins`` (what this clearing of the task paid for the image: every
    job of it; None when HitPaw did not say) and ``file_url``; when it waited, also ``status``,
    ``res_url``, ``mask_url`` and ``original_url``; with ``output_path``, also ``res_path``, ``mask_path``
    and ``reused``. What HitPaw could not take fails the task before a coin is spent, without retries; so
    do result files already in ``output_path`` under ``overwrite="fail"``. What it paid for is kept in the
    batch's ledger (in ``output_path`` on every Airflow line, else in Airflow 3.3's task state store): a
    retry waits for the job an earlier try submitted instead of paying again, does not send again a
    submission whose answer was lost, and a failure after paying (a time-out, a status poll that failed
    for good) is retried only where the ledger was saved, and final elsewhere. A completed job whose
    ``original_url`` is not the image submitted is refused (``HitPawUntrustedAnswerError``), nothing kept.

    :param file_url: public http(s) URL of the image (templated).
    :param source_path: instead of ``file_url``: an image in any storage Airflow reaches (templated),
        uploaded through HitPaw's pre-signed upload.
    :param source_conn_id: the connection of ``source_path``'s storage, when it needs one.
    :param output_path: where to keep the cut-out and the mask beyond HitPaw's 8 days (an
        ``ObjectStoragePath`` or a URI; templated).
    :param output_conn_id: the connection of ``output_path``'s storage, when it needs one.
    :param overwrite: when the results exist already: ``overwrite``, ``fail`` or ``skip`` (an input kept
        there is not submitted: ``consume_coins: 0``; a changed image behind the same URL is not noticed).
    :param output_layout: ``flat`` (``<stem>-<hash>.png`` in ``output_path`` itself) or ``mirror`` (the
        input's folders below ``input_root`` kept: ``raw/sku-1/main.jpg`` gives ``sku-1/main.png``).
    :param input_root: with ``mirror``: the folder (or URL prefix) below which the input's path is
        mirrored (templated).
    :param finish: storefront images made on the worker from the kept cut-out (templated), as
        ``SegmentImageBatchOperator``'s ``finish``; results gain ``finishes``, ``quality`` and ``suspect``.
    :param emit_asset: declare ``output_path`` as an Asset (a Dataset on Airflow 2); needs a fixed path.
    :param hitpaw_conn_id: the ``hitpaw`` connection.
    :param wait_for_completion: wait for the job to end (True) or return right after submitting.
    :param deferrable: wait in the triggerer (True) or poll in this worker (False).
    :param poll_interval: seconds between two status polls (at least 1).
    :param min_deferred_seconds: stay deferred at least this long, against an Airflow 3 race that fails a
        try resumed within seconds; 0 turns the hold off; None: ``[hitpaw] min_deferred_seconds`` (10 s).
    :param timeout: seconds to wait, from the start of this try (more than 0, at most 8 days); a job can stay
        ``CONVERTING`` for more than 15 minutes under load.
    """

    template_fields: Sequence[str] = ("file_url", "source_path", "output_path", "input_root", "finish")
    ui_color = "#aed6f1"
    #: The ledger of this try, once loaded: its store, the ledger, and this input's key in it.
    _paid: tuple[LedgerStore, Ledger, str] | None = None

    def __init__(
        self,
        *,
        file_url: str | None = None,
        source_path: Any = None,
        source_conn_id: str | None = None,
        output_path: Any = None,
        output_conn_id: str | None = None,
        overwrite: str = "overwrite",
        output_layout: str = "flat",
        input_root: Any = None,
        finish: Any = None,
        emit_asset: bool = False,
        hitpaw_conn_id: str = DEFAULT_CONN_ID,
        wait_for_completion: bool = True,
        deferrable: bool = True,
        poll_interval: float = 3,
        min_deferred_seconds: float | None = None,
        timeout: float = 3600,
        **kwargs: Any,
    ) -> None:
        if (file_url is None) == (source_path is None):
            raise HitPawConfigurationError(
                "file_url", "give either file_url or source_path, not both or none"
            )
        output = ResultOutput.checked(
            output_path,
            output_conn_id,
            overwrite,
            waits=wait_for_completion,
            output_layout=output_layout,
            input_root=input_root,
            root_needed=True,
            finish=finish,
            has_original=source_path is not None,
        )
        if emit_asset:
            kwargs["outlets"] = [*kwargs.get("outlets", []), output.asset()]
        super().__init__(**kwargs)
        self.file_url = file_url
        self.source_path = source_path
        self.source_conn_id = source_conn_id
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.overwrite = overwrite
        self.output_layout = output_layout
        self.input_root = input_root
        self.finish = finish
        self.hitpaw_conn_id = hitpaw_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        # Checked at parse time: a DAG with a nonsensical wait should not load, let alone run.
        self.poll_interval = validate_poll_interval(poll_interval)
        self.min_deferred_seconds = validate_event_hold(min_deferred_seconds)
        self.timeout = validate_timeout(timeout)
        self._lineage: dict[str, Any] = {}

    operator_extra_links = result_links()

    def _hook(self) -> HitPawHook:
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

        return HitPawHook(self.hitpaw_conn_id)

    def _output(self) -> ResultOutput:
        output = ResultOutput.checked(
            self.output_path,
            self.output_conn_id,
            self.overwrite,
            waits=self.wait_for_completion,
            output_layout=self.output_layout,
            input_root=self.input_root,
            root_needed=True,
            finish=self.finish,
            has_original=self.source_path is not None,
        )
        return output.laid_out(self.output_layout, self.input_root, self.source_conn_id, [self._input_key()])

    def _input_key(self) -> str:
        """What identifies the input across tries and runs: the URL, or the source's URI (its upload gets
        a new URL each time)."""
        if self.source_path is None:
            return str(self.file_url).strip()
        from airflow_provider_hitpaw import storage

        return storage.input_identity(self.source_path, self.source_conn_id)

    def _ledger_key(self, fingerprint: str | None) -> str:
        """The input's key in the ledger, by the batch's rule: the URL, or a stored source's content (so
        that a source edited between tries is a new image, paid for again, and reported)."""
        return f"content:{fingerprint}" if fingerprint else self._input_key()

    def _ledger_store(self, context: Context) -> LedgerStore:
        return self._output().ledger_store(context, self.log)

    def _load_ledger(self, context: Context, key: str) -> tuple[LedgerStore, Ledger]:
        """What earlier tries of this clearing paid for (and what this try pays for from now on: the
        failure rule reads it). A ledger that cannot be read fails the try before anything is paid."""
        store = self._ledger_store(context)
        ledger = store.load()
        self._adopt_old_record(context, ledger, key)
        self._paid = (store, ledger, key)
        return store, ledger

    def _adopt_old_record(self, context: Context, ledger: Ledger, key: str) -> None:
        """A job an earlier try recorded the way versions before the ledger did (Airflow 3.3's task state
        store), read once: only while the ledger holds nothing for this input."""
        if ledger.entry(key) is not None:
            return
        try:
            earlier = _state_store.recall(context, _SUBMITTED_JOB_KEY)
        except Exception:  # the store is Airflow's: an old record unread is the old version's miss
            return
        if (
            isinstance(earlier, dict)
            and earlier.get("input") == self._input_key()
            and _api.is_usable_job_id(earlier.get("job_id"))
        ):
            if self.source_path is not None:
                # Named by the source's path alone: whether the file was replaced since cannot be told,
                # so its job is neither kept as this source's result nor paid for again blindly.
                raise fail_without_retry(
                    f"an earlier try (by a version of this provider before its ledger) submitted "
                    f"{self._shown_input()} as job {earlier['job_id']!r} and kept no fingerprint of the "
                    "file: whether it changed since cannot be told. Wait for that job with "
                    "SegmentationSensor(job_id=...), or clear the task to submit the source (and pay) again"
                )
            price = _price(earlier.get("consume_coins"))
            ledger.submitted(key, earlier["job_id"], price, made_for=self._input_key())

    def execute(self, context: Context) -> dict[str, Any]:
        # The links are resolved whenever the try ends (a refusal, a submit-only task, a deferral too):
        # they find a value from the start instead of logging a missing XCom.
        push_links(context, {"cutout": "", "mask": ""})
        self._paid = None
        with self._hook() as hook:
            try:
                file_url, source = self._checked_input(hook)
                fingerprint = fingerprint_of(self.source_path, self.source_conn_id)
                key = self._ledger_key(fingerprint)
                _, ledger = self._load_ledger(context, key)
                own_job = ledger.live_job(key)
                if own_job is not None and ledger.kept_by_this_clearing(key, self._input_key()):
                    own = self._output().find_kept(self._input_key(), fingerprint, any_policy=True)
                    if own is not None and own.job_id == own_job:
                        return self._kept_before(context, own)  # kept, then the try was lost: no poll
                # What this clearing paid for is waited for again, never hidden behind another's pair.
                kept = (
                    None if own_job is not None else self._output().find_kept(self._input_key(), fingerprint)
                )
                if kept is None:
                    self._refuse_existing_results(fingerprint, own_job)
            except HitPawError as err:  # before paying, unless an earlier try of this clearing paid
                failure = self._failure(err)
                job = self._paid[1].live_job(self._paid[2]) if self._paid is not None else None
                if job is not None and isinstance(failure, AirflowFailException) and job not in str(failure):
                    failure = AirflowFailException(
                        f"{failure}; job {job!r}, paid for by an earlier try, is not kept"
                    )
                raise failure from err
            if kept is not None:
                return self._reused(context, kept)
            submission: dict[str, Any] | None = None
            try:
                submission, status = self._submit_or_reattach(hook, file_url, source, fingerprint, context)
                if status is not None and status.is_completed:
                    return self._finish(context, submission, status.to_dict(), hook)
                if not self.wait_for_completion:
                    return submission
                if not self.deferrable:
                    # Counted from the start of the try, as the deferrable wait counts it.
                    remaining = _deferral.try_started_at(context) + self.timeout - time.time()
                    try:
                        status = hook.wait_for_completion(
                            submission["job_id"],
                            poll_interval=self.poll_interval,
                            timeout=max(0.0, remaining),
                        )
                    except HitPawError as err:
                        if is_unreadable_poll(err):
                            raise _PollFailed(submission["job_id"], err) from err
                        raise
                    return self._finish(context, submission, status.to_dict(), hook)
            except _PollFailed as failed:
                raise self._poll_failed(failed.error, context, failed.job_id) from failed.error
            except HitPawJobFailedError as err:
                raise self._job_failed(err, context, submission) from err
            except HitPawError as err:
                raise self._failure(err) from err
        self._defer_until_done(submission, context)
        raise AssertionError("defer() always raises")  # pragma: no cover

    def _checked_input(self, hook: HitPawHook) -> tuple[str | None, Any]:
        """Everything that can be judged before a coin is spent: the connection, the input, the output
        storage. Returns the URL to submit, or the checked source to upload."""
        allow_internal = allows_internal_hosts(hook)
        self._output().check_storage()
        self._output().check_not_over_inputs([self._input_key()])
        if self.source_path is None:
            return validate_file_url(self.file_url, allow_internal_hosts=allow_internal), None
        from airflow_provider_hitpaw import storage

        return None, storage.read_source(self.source_path, conn_id=self.source_conn_id)

    def _refuse_existing_results(self, fingerprint: str | None, own_job_id: str | None) -> None:
        """Under ``overwrite="fail"``, refuse result files already in ``output_path`` before paying, not
        after: except the pair ``own_job_id`` (the job of this task's earlier try, which the ledger
        holds) kept, which is what this try is about to wait for again."""
        if self.output_path is None or self.overwrite != "fail":
            return
        from airflow_provider_hitpaw import storage

        storage.refuse_existing_results(
            self.output_path,
            self._input_key(),
            conn_id=self.output_conn_id,
            fingerprint=fingerprint,
            own_job_id=own_job_id,
            layout=self._output().layout,
        )
        if own_job_id is None and self._output().finishes:  # a finish file there already is not ours
            found = self._output().existing([self._input_key()])
            if found:
                raise HitPawConfigurationError(
                    "output_path",
                    f"{next(iter(found.values()))} already exists (overwrite='fail'); remove it, or set "
                    "overwrite to 'overwrite' or 'skip'",
                )

    def _upload(self, hook: HitPawHook, source: Any) -> str:
        """Upload the source through HitPaw's pre-signed upload; return the URL to submit."""
        from airflow_provider_hitpaw import storage

        filename, content_type, size = source
        presigned = hook.presign_upload(filename, content_type)
        with storage.open_source(self.source_path, conn_id=self.source_conn_id) as stream:
            hook.upload(presigned, stream)
        self.log.info("Uploaded %s (%d bytes) to HitPaw", self._input_key(), size)
        return presigned.access_url

    def _kept_before(self, context: Context, kept: KeptResult) -> dict[str, Any]:
        """The pair an earlier try of this clearing kept, then lost the try: this run's, at its price."""
        self.log.info(
            "%s was kept by an earlier try (job %r): nothing to do", self._shown_input(), kept.job_id
        )
        result = self._reused(context, kept, log=False)
        return {
            **result,
            "reused": False,
            "consume_coins": self._coins_of_this_run({}),
            **self._maybe_charged(),
        }

    def _reused(self, context: Context, kept: KeptResult, *, log: bool = True) -> dict[str, Any]:
        """The result of an input whose results an earlier run kept: nothing submitted, nothing paid."""
        if log:
            self.log.info(
                "%s was segmented before (job %r, kept %s); reusing %s, no coin spent",
                self._shown_input(),
                kept.job_id,
                kept.kept_at or "earlier",
                kept.res_path,
            )
            _metrics.count_reused()
        result: dict[str, Any] = {"file_url": self._shown_url(), **kept.as_result()}
        result.update(made_from_kept(self._output(), result, self._original()))
        if self.source_path is not None:
            result["source_path"] = str(self.source_path)
        from airflow_provider_hitpaw import storage
        from airflow_provider_hitpaw.links import links_value

        folder = storage.as_storage_path(self.output_path, self.output_conn_id, field="output_path")
        push_links(context, links_value(result, result, folder))
        self._lineage = {"input": self._input_key(), "outputs": [kept.res_path, kept.mask_path]}
        return result

    def _submit_or_reattach(
        self,
        hook: HitPawHook,
        file_url: str | None,
        source: Any,
        fingerprint: str | None,
        context: Context,
    ) -> tuple[dict[str, Any], TaskStatus | None]:
        """Return the job to wait for: the one the ledger holds from an earlier try when it can still end
        well, else a new one, recorded in the ledger before anything else happens."""
        key = self._ledger_key(fingerprint)
        store, ledger = self._load_ledger(context, key)
        earlier = ledger.live_job(key)
        if earlier is not None:
            try:
                status = hook.get_task_status(earlier)
            except HitPawError as err:
                if is_unreadable_poll(err):
                    # A gateway's bare 404 or 409 says nothing of the job: better fail than pay twice.
                    worded = JobEvent.unreadable_poll(earlier, err, None).failure()
                    raise _PollFailed(earlier, worded) from err
                if not _api.says_job_unknown(err):
                    raise
                # HitPaw no longer knows the job (expired): only then is a new submission no double.
                self.log.info("The job of the earlier try is gone (%s); submitting again", err)
                ledger.forgotten(key, earlier)
            else:
                if not status.is_failed:
                    self.log.info(
                        "Waiting for job %r, submitted by an earlier try (now %s), instead of paying again",
                        earlier,
                        status.status,
                    )
                    return self._reattached(earlier, ledger, key, file_url, fingerprint), status
                self.log.info("The job of the earlier try ended in ERROR; submitting the image again")
                ledger.ended(key, earlier, completed=False)
            # The earlier job's own files no longer excuse a new submission's: judged again, before paying.
            self._refuse_existing_results(fingerprint, None)
        if ledger.answer_was_lost(key):
            raise fail_without_retry(
                HitPawSubmissionUnknownError(
                    f"an earlier try's submission of {self._shown_input()} lost its answer after HitPaw may "
                    "have charged for it: not submitted again in this clearing of the task; clear the task "
                    "to submit it (and pay) again"
                )
            )
        if not store.keeps and not first_try_of_clearing(context, int(self.retries or 0)):
            self.log.warning(
                "This task keeps no record across tries (no output_path, and no task state store before "
                "Airflow 3.3): this retry cannot find the job an earlier try may have paid for, and submits "
                "(and pays for) the image again"
            )
        if file_url is None:
            file_url = self._upload(hook, source)
        try:
            job = hook.submit_segmentation(file_url)
        except HitPawError as err:
            if _api.submission_ended_maybe_charged(type(err).__name__):
                # HitPaw may have charged: a retry of this clearing must not send it again.
                ledger.answer_lost(key, made_for=self._input_key())
                store.save(ledger)
            raise
        except BaseException:  # Airflow's execution_timeout or a SIGTERM mid-request: it may have landed
            ledger.answer_lost(key, made_for=self._input_key())
            store.save(ledger)
            raise
        ledger.submitted(key, job.job_id, job.consume_coins, made_for=self._input_key(), lost=job.resent)
        store.save(ledger)  # at once: a crash from here on must not make the retry pay again
        _metrics.count_submitted(job.consume_coins)
        submission: dict[str, Any] = {
            "job_id": job.job_id,
            "consume_coins": job.consume_coins,
            "file_url": _api.url_without_credentials(file_url),
            "submitted_at": time.time(),
        }
        if job.resent:  # the ledger may not be saved: the resumed half must still know what it may cost
            submission["resent"] = job.resent
        if self.source_path is not None:
            submission["source_path"] = str(self.source_path)
            submission["source_fingerprint"] = fingerprint
        self.log.info(
            "Submitted %s to HitPaw as job %r (%s)",
            self._shown_input(),  # the source as the user named it, not the upload's storage key
            job.job_id,
            coins_text(job.consume_coins),
        )
        if store.keeps and not store.durable(ledger):
            self.log.warning(
                "Job %r could not be recorded in %s: this try goes on waiting for it, but a retry would not "
                "find it and would pay for the image again",
                job.job_id,
                store.where,
            )
        return submission, None

    def _reattached(
        self, job_id: str, ledger: Ledger, key: str, file_url: str | None, fingerprint: str | None
    ) -> dict[str, Any]:
        """The submission of a job an earlier try paid for, as far as the ledger knows it: its price, and
        the URL it was made from for a URL input (an upload's URL is not kept: not checked again)."""
        entry = ledger.entry(key)
        submission: dict[str, Any] = {
            "job_id": job_id,
            "consume_coins": entry.coins if entry is not None else None,
            "file_url": _api.url_without_credentials(file_url) if file_url else file_url,
        }
        if self.source_path is not None:
            submission["source_path"] = str(self.source_path)
            submission["source_fingerprint"] = fingerprint
        return submission

    def _defer_until_done(self, submission: dict[str, Any], context: Context) -> None:
        from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger

        # The submission travels in the try's own XCom, which Airflow keeps across a deferral on every
        # line (``airflow dags test`` drops the kwargs given to defer()).
        context["ti"].xcom_push(key=SUBMISSION_XCOM_KEY, value=submission)
        push_links(context, {"cutout": "", "mask": ""})
        end_time = _deferral.try_started_at(context) + self.timeout
        self.defer(
            trigger=SegmentationTrigger(
                job_id=submission["job_id"],
                hitpaw_conn_id=self.hitpaw_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                not_before=_deferral.event_not_before(self.min_deferred_seconds),
            ),
            method_name="execute_complete",
            kwargs={"submission": submission},
            timeout=_deferral.deferral_timeout(end_time),
        )

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        submission: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        seen_at: float | None = None
        job_id = event.get("job_id") if isinstance(event, dict) else None
        if not isinstance(submission, dict) and isinstance(job_id, str):
            submission = self._pushed_submission(context, job_id)
        self._resume_ledger(context, submission)
        try:
            parsed = JobEvent.from_payload(event)
            seen_at = parsed.seen_at
            if parsed.unreadable and parsed.outcome is Outcome.ERROR:
                raise _PollFailed(parsed.job_id, parsed.failure())
            status = parsed.raise_unless_completed()
        except _PollFailed as failed:
            raise self._poll_failed(failed.error, context, failed.job_id) from failed.error
        except HitPawJobFailedError as err:
            raise self._job_failed(err, context, submission, seen_at) from err
        except HitPawError as err:
            raise self._failure(err) from err
        if not isinstance(submission, dict):
            submission = self._recalled_submission(status["job_id"])
        with self._hook() as hook:
            return self._finish(context, submission, status, hook, seen_at)

    def _resume_ledger(self, context: Context, submission: dict[str, Any] | None) -> None:
        """The ledger as the deferring half of this try left it, with this try's job in it whatever the
        store lacks (it is paid for): what the failure rule and the coins reported read."""
        from airflow_provider_hitpaw._ledger import Ledger

        self._paid = None
        fingerprint = submission.get("source_fingerprint") if isinstance(submission, dict) else None
        key = self._ledger_key(fingerprint if isinstance(fingerprint, str) else None)
        try:
            store, ledger = self._load_ledger(context, key)
        except HitPawError as err:  # the job is paid for: go on, and let the failure rule judge a failure
            self.log.warning("%s", err)
            store = self._ledger_store(context)
            ledger = Ledger()
            self._paid = (store, ledger, key)
        job_id = submission.get("job_id") if isinstance(submission, dict) else None
        if _api.is_usable_job_id(job_id) and job_id not in ledger.job_ids():
            price = _price(submission.get("consume_coins") if isinstance(submission, dict) else None)
            lost = _price(submission.get("resent") if isinstance(submission, dict) else None) or 0
            ledger.submitted(key, str(job_id), price, made_for=self._input_key(), lost=lost)
        if ledger.has_changes:
            store.save(ledger)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral Airflow ended itself fails with a message that names the job (paid for) and the
        likely cause, instead of a bare ``TaskDeferralTimeout``; by the failure rule, a retry waits for
        that job where the ledger is kept, and the failure is final where it is not (the retry would pay
        again)."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowException as err:
            if next_method != _deferral.FAIL_METHOD:
                raise
            ti = context["ti"]
            pushed = ti.xcom_pull(task_ids=ti.task_id, key=SUBMISSION_XCOM_KEY, map_indexes=ti.map_index)
            job = pushed.get("job_id") if isinstance(pushed, dict) else None
            what = f"HitPaw job {job!r} for {self._shown_input()} (already paid for)" if job else "The wait"
            self._resume_ledger(context, pushed if isinstance(pushed, dict) else None)
            failure = self._failure(HitPawTimeoutError(_deferral.deferral_failure(err, what)))
            raise failure from err

    def _pushed_submission(self, context: Context, job_id: str) -> dict[str, Any] | None:
        """The submission of this try from its XCom, where the resumed call did not get it as a kwarg."""
        ti = context["ti"]
        pushed = ti.xcom_pull(task_ids=ti.task_id, key=SUBMISSION_XCOM_KEY, map_indexes=ti.map_index)
        if isinstance(pushed, dict) and pushed.get("job_id") == job_id:
            return pushed
        return None

    def _recalled_submission(self, job_id: str) -> dict[str, Any]:
        """The submission of this try, where neither the kwargs nor the XCom kept it: what the ledger
        knows (the job's price), else nothing of its cost."""
        entry = None
        if self._paid is not None:
            _, ledger, key = self._paid
            entry = ledger.entry(key)
        if entry is not None and entry.job_id == job_id:
            self.log.warning("The submission's details were lost on resuming; its price is the ledger's")
            return {"job_id": job_id, "consume_coins": entry.coins, "file_url": self._shown_url()}
        self.log.warning("The submission's details were lost on resuming; the cost is unknown")
        return {"job_id": job_id, "consume_coins": None, "file_url": self._shown_url()}

    def _job_failed(
        self,
        err: HitPawJobFailedError,
        context: Context,
        submission: dict[str, Any] | None,
        seen_at: float | None = None,
    ) -> HitPawJobFailedError:
        """The failure of a job that ended in ERROR, naming this task's input (and counted, once). The
        ledger says so: a retry submits the image again (paid, and counted in what it reports)."""
        if err.job_id is None:
            return err
        submitted_at = submission.get("submitted_at") if isinstance(submission, dict) else None
        if self._paid is not None:
            store, ledger, key = self._paid
            ledger.ended(key, err.job_id, completed=False)
            store.save(ledger)
        self._count_end(context, err.job_id, False, _metrics.seconds_since(submitted_at, seen_at))
        return HitPawJobFailedError.for_job(err.job_id, self._shown_input())

    def _count_end(self, context: Context, job_id: str, completed: bool, duration: float | None) -> None:
        """A job's end in the metrics, once per clearing: the ledger says whether a try before this one
        counted it (on every line it is kept), and so does Airflow 3.3's task state store."""
        if self._paid is None:
            _metrics.count_end_once(context, job_id, completed, duration)
            return
        store, ledger, key = self._paid
        entry = ledger.entry(key)
        if entry is not None and entry.job_id == job_id and entry.counted:
            return
        _metrics.count_end_once(context, job_id, completed, duration)
        ledger.count(key)
        store.save(ledger)

    def _failure(self, err: HitPawError) -> Exception:
        """The one rule for a try that fails after paying (as the batch's): a retry is allowed only where
        it would find the job this clearing paid for (the ledger is saved where a retry reads it), or
        where nothing is at stake (nothing paid, or the job ended in ERROR); otherwise the failure is
        final, and names the paid job."""
        failure = task_failure(err)
        if isinstance(failure, AirflowFailException) or self._paid is None:
            return failure
        store, ledger, key = self._paid
        if ledger.has_changes and not store.write_failed:
            store.save(ledger)
        job = ledger.live_job(key)
        if store.durable(ledger) or (job is None and not ledger.answer_was_lost(key)):
            return failure
        paid = (
            f"job {job!r} for {self._shown_input()} is paid for"
            if job is not None
            else f"HitPaw may have charged for {self._shown_input()} without its answer arriving"
        )
        return fail_without_retry(
            f"{err}; not retried automatically: {paid}, and {self._why_not_kept(store)}, so a retry would "
            "pay for the image again"
            + (". Wait for it with SegmentationSensor(job_id=...)" if job is not None else "")
        )

    @staticmethod
    def _why_not_kept(store: LedgerStore | None) -> str:
        if store is not None and store.keeps:
            return f"saving its record to {store.where} failed"
        return _NO_RECORD

    def _poll_failed(self, err: HitPawError, context: Context, job_id: str) -> Exception:
        """A poll of a paid job that failed for good is not the job failing: where the ledger keeps the
        job across tries, a plain failure that Airflow retries (the retry waits for the same job);
        elsewhere a retry would pay again, so the failure is final and says which job holds the coins."""
        durable = False
        store: LedgerStore | None = None
        if self._paid is not None:
            store, ledger, key = self._paid
            if ledger.has_changes and not store.write_failed:
                store.save(ledger)
            durable = ledger.live_job(key) == job_id and store.durable(ledger)
        if durable:
            retried = ErrorInfo.of(err).rebuild(
                f"{err.message}; a retry of this task waits for job {job_id!r} instead of paying again"
            )
            self.log.warning("%s", retried)
            return retried
        return fail_without_retry(
            f"{err}; not retried automatically: job {job_id!r} for {self._shown_input()} is paid for, and "
            f"{self._why_not_kept(store)}, so a retry would pay for the image again. Wait for it with "
            "SegmentationSensor(job_id=...)"
        )

    def _shown_input(self) -> str:
        if self.source_path is not None:
            return str(self.source_path)
        return _api.url_without_query(str(self.file_url))

    def _original(self) -> Any:
        """Reads the photo sent (a stored source) for a blurred background; None for a URL input."""
        if self.source_path is None:
            return None
        from airflow_provider_hitpaw import storage

        def read() -> bytes:
            with storage.open_source(self.source_path, conn_id=self.source_conn_id) as stream:
                data: bytes = stream.read()
            return data

        return read

    def _shown_url(self) -> str | None:
        """``file_url`` as XCom carries it: without the credentials it may hold."""
        return _api.url_without_credentials(str(self.file_url)) if self.file_url is not None else None

    def _maybe_charged(self) -> dict[str, int]:
        """``maybe_charged``: what answers lost on the way may have cost besides what HitPaw named."""
        if self._paid is None:
            return {}
        _, ledger, key = self._paid
        lost = ledger.maybe_charged(key)
        return {"maybe_charged": lost} if lost else {}

    def _coins_of_this_run(self, submission: dict[str, Any]) -> int | None:
        """What this clearing paid HitPaw for the input: every job of it (one that ended in ERROR or that
        HitPaw forgot, and the one that completed), and what an earlier try paid for the source before it
        was edited. None where a price is unknown."""
        if self._paid is None:
            return _price(submission.get("consume_coins"))
        _, ledger, key = self._paid
        paid = ledger.coins_paid(key)
        for earlier in ledger.paid_for_gone_keys([key]).values():
            paid = None if paid is None or earlier is None else paid + earlier
        return paid

    def _finish(
        self,
        context: Context,
        submission: dict[str, Any],
        status: dict[str, Any],
        hook: HitPawHook,
        seen_at: float | None = None,
    ) -> dict[str, Any]:
        """On the worker, after COMPLETED: keep the results where the user asked, show links, and say what
        went in and out (lineage). The job's end is counted once its results are kept: a try that fails
        to keep them leaves the count to the retry that does."""
        source = self._input_key()
        fingerprint = submission.get("source_fingerprint")
        job_id = str(status.get("job_id") or submission.get("job_id"))
        if self._paid is not None:
            _, ledger, key = self._paid
            if job_id not in ledger.job_ids():  # resumed without its submission: its price is unknown
                ledger.submitted(key, job_id, None, made_for=source)
            ledger.ended(key, job_id, completed=True)
        coins = self._coins_of_this_run(submission)
        try:
            self._check_bound_to_input(job_id, status, submission)
            result = self._output().persist(
                context,
                {**submission, **status, "consume_coins": coins, "reused": False, **self._maybe_charged()},
                source,
                hook,
                fingerprint,
            )
            result.update(made_from_kept(self._output(), result, self._original()))
        except HitPawStorageError as err:
            failure = self._paid_failure(not_kept_failure(err, job_id, status))
            raise failure from failure.__cause__
        except HitPawError as err:
            raise self._failure(err) from err
        except Exception as err:  # a store's own error escaped: say what was paid for, and where it is
            if self.output_path is None:
                raise
            failure = self._paid_failure(not_kept_failure(err, job_id, status))
            raise failure from failure.__cause__
        if self._paid is not None and result.get("res_path"):
            store, ledger, key = self._paid
            ledger.kept(key, source)
            store.save(ledger)
        duration = _metrics.seconds_since(submission.get("submitted_at"), seen_at)
        self._count_end(context, str(result["job_id"]), True, duration)
        self._lineage = {"input": source, "outputs": [result.get("res_path"), result.get("mask_path")]}
        return _api.without_credentials(result)

    def _paid_failure(self, failure: Exception) -> Exception:
        """A failure built for a paid job (its results not kept), judged by the failure rule: final
        already, or retried only where the retry finds the job (then chained to the storage's error)."""
        if not isinstance(failure, HitPawError):
            return failure
        judged = self._failure(failure)
        if judged is not failure:
            judged.__cause__ = failure
        return judged

    def _check_bound_to_input(self, job_id: str, status: dict[str, Any], submission: dict[str, Any]) -> None:
        """Refuse a job whose ``original_url`` is not the URL this task submitted, before anything of it is
        kept or returned (see :func:`~airflow_provider_hitpaw.storage.same_image_url`)."""
        submitted = submission.get("file_url")
        if not isinstance(submitted, str) or not submitted:
            self.log.warning(
                "The URL submitted for job %r is not known on resuming; its original_url is not checked",
                job_id,
            )
            return
        from airflow_provider_hitpaw import storage

        storage.check_answered_for(job_id, status.get("original_url"), submitted)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The input image as input dataset and the persisted files as outputs (openlineage provider)."""
        return lineage(self._lineage)


def _price(value: Any) -> int | None:
    """A price as HitPaw named it (carried in XCom or an old record), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def not_kept_failure(err: Exception, job_id: str, status: dict[str, Any]) -> Exception:
    """The failure of a paid job whose results the storage refused: a :class:`HitPawStorageError` that
    says so (raised itself, or as the cause of a failure without retries), chained to the store's error."""
    from airflow_provider_hitpaw import storage

    kept = storage.not_kept_error(err, job_id, status)
    kept.__cause__ = err
    failure = task_failure(kept)
    if failure is not kept:
        failure.__cause__ = kept
    return failure


class _PollFailed(Exception):
    """A status poll of a paid job that failed for good, saying nothing of the job: carried past the
    handlers that turn HitPaw's errors into task failures, to :meth:`SegmentImageOperator._poll_failed`."""

    def __init__(self, job_id: str, error: HitPawError) -> None:
        super().__init__(str(error))
        self.job_id = job_id
        self.error = error
