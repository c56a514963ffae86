"""Operators that submit images to HitPaw's segmentation.

DAG files import this module on every parse, so it imports neither HTTP clients nor the hooks at the top:
they are loaded when a task runs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator

from airflow_provider_hitpaw import _api, _task_support
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawError,
    HitPawInvalidRequestError,
)
from airflow_provider_hitpaw.validation import (
    validate_file_url,
    validate_positive_int,
    validate_positive_seconds,
    validate_timeout,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_hitpaw._api import SegmentationJob, TaskStatus
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

#: Where a try keeps the job it submitted, so that the next try waits for it instead of paying again.
_SUBMITTED_JOB_KEY = "hitpaw_submitted_job"


class SegmentImageOperator(BaseOperator):
    """Submit one image to HitPaw's segmentation and, by default, wait for the cut-out.

    Returns (XCom) ``job_id``, ``consume_coins`` and ``file_url``; when it waited, also the task-status
    fields ``status``, ``res_url``, ``mask_url`` and ``original_url``; with ``output_path``, also
    ``res_path`` and ``mask_path``, the copies that outlive HitPaw's 8 days.

    The input is checked before anything is sent: a URL HitPaw cannot take, or a file of a format it does
    not segment, fails the task at once, without retries and without spending coins. A job that ends in
    ``ERROR`` fails the task normally, so the task's retries submit the image again. On Airflow 3.3 the
    submitted job is remembered in the task state store, so a retry after a crash or a time-out waits for
    that job instead of paying for a new one.

    :param file_url: public http(s) URL of a .jpg, .jpeg, .png or .webp image (templated).
    :param source_path: instead of ``file_url``: an image in any storage Airflow reaches (an
        ``ObjectStoragePath``, a local path, ``s3://...``; templated). It is uploaded through HitPaw's
        pre-signed upload and its ``access_url`` is submitted.
    :param source_conn_id: the connection of ``source_path``'s storage, when it needs one.
    :param output_path: where to keep the cut-out and the mask (an ``ObjectStoragePath`` or a URL such as
        ``file:///data/out/`` or ``s3://bucket/cutouts/``; templated): named after the input
        (``shoe-042.png`` and ``shoe-042_mask.png``), copied by the worker once the job completed.
    :param output_conn_id: the connection of ``output_path``'s storage, when it needs one.
    :param overwrite: what to do when a result file exists already: ``overwrite``, ``skip`` or ``fail``.
    :param emit_asset: declare ``output_path`` as an Asset (a Dataset on Airflow 2) this task updates, so
        that downstream DAGs can be scheduled on fresh cut-outs (needs a fixed, untemplated path).
    :param hitpaw_conn_id: the ``hitpaw`` connection.
    :param wait_for_completion: wait for the job to end (True) or return right after submitting.
    :param deferrable: wait in the triggerer (True) or poll in this worker (False).
    :param poll_interval: seconds between two status polls.
    :param timeout: seconds to wait for the job, counted from the start of this try. HitPaw warns that a
        job can stay ``CONVERTING`` for more than 15 minutes under load, hence the hour.
    """

    template_fields: Sequence[str] = ("file_url", "source_path", "output_path")
    ui_color = "#aed6f1"

    def __init__(
        self,
        *,
        file_url: str | None = None,
        source_path: Any = None,
        source_conn_id: str | None = None,
        output_path: Any = None,
        output_conn_id: str | None = None,
        overwrite: str = "overwrite",
        emit_asset: bool = False,
        hitpaw_conn_id: str = "hitpaw_default",
        wait_for_completion: bool = True,
        deferrable: bool = True,
        poll_interval: float = 3,
        timeout: float = 3600,
        **kwargs: Any,
    ) -> None:
        if (file_url is None) == (source_path is None):
            raise HitPawConfigurationError(
                "file_url", "give either file_url or source_path, not both or none"
            )
        output = _task_support.ResultOutput.checked(
            output_path, output_conn_id, overwrite, wait_for_completion
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
        self.hitpaw_conn_id = hitpaw_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        # Checked at parse time: a DAG with a nonsensical wait should not load, let alone run.
        self.poll_interval = validate_positive_seconds(poll_interval, "poll_interval")
        self.timeout = validate_timeout(timeout)
        self._lineage: dict[str, Any] = {}

    operator_extra_links = _task_support.result_links()

    def _hook(self) -> HitPawHook:
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

        return HitPawHook(self.hitpaw_conn_id)

    def _input_key(self) -> str:
        """What identifies the input across tries: the source path when there is one (its upload gets a
        new URL each time), else the URL."""
        return str(self.source_path) if self.source_path is not None else str(self.file_url)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            file_url = validate_file_url(self.file_url) if self.source_path is None else None
            source = self._checked_source() if self.source_path is not None else None
        except HitPawError as err:
            raise _task_support.fail_without_retry(err) from err
        with self._hook() as hook:
            try:
                submission, status = self._submit_or_reattach(hook, file_url, source, context)
                if status is not None and status.is_completed:
                    return self._finish(context, submission, status.to_dict())
                if not self.wait_for_completion:
                    return submission
                if not self.deferrable:
                    # Counted from the start of the try, as the deferrable wait counts it.
                    remaining = _task_support.try_started_at(context) + self.timeout - time.time()
                    status = hook.wait_for_completion(
                        submission["job_id"], poll_interval=self.poll_interval, timeout=max(0.0, remaining)
                    )
                    return self._finish(context, submission, status.to_dict())
            except HitPawError as err:
                raise _task_support.task_failure(err) from err
        self._defer_until_done(submission, context)
        raise AssertionError("defer() always raises")  # pragma: no cover

    def _checked_source(self) -> Any:
        from airflow_provider_hitpaw import storage

        return storage.read_source(self.source_path, conn_id=self.source_conn_id)

    def _upload(self, hook: HitPawHook, source: Any) -> str:
        """Upload the source through HitPaw's pre-signed upload; return the URL to submit."""
        from airflow_provider_hitpaw import storage

        filename, content_type, size = source
        presigned = hook.presign_upload(filename, content_type)
        with storage.open_source(self.source_path, conn_id=self.source_conn_id) as stream:
            hook.upload(presigned, stream)
        self.log.info("Uploaded %s (%d bytes) to HitPaw", self.source_path, size)
        return presigned.access_url

    def _submit_or_reattach(
        self, hook: HitPawHook, file_url: str | None, source: Any, context: Context
    ) -> tuple[dict[str, Any], TaskStatus | None]:
        """Return the job to wait for: the one an earlier try submitted when it can still end well,
        else a new one."""
        earlier = _task_support.recall(context, _SUBMITTED_JOB_KEY)
        if isinstance(earlier, dict) and earlier.get("input") == self._input_key() and earlier.get("job_id"):
            try:
                status = hook.get_task_status(earlier["job_id"])
            except HitPawInvalidRequestError as err:
                # HitPaw no longer knows the job (expired): only then is a new submission no double.
                self.log.info("The job of the earlier try is gone (%s); submitting again", err)
            else:
                if not status.is_failed:
                    self.log.info(
                        "Waiting for job %s, submitted by an earlier try (now %s), instead of paying again",
                        earlier["job_id"],
                        status.status,
                    )
                    return _public_submission(earlier), status
                self.log.info("The job of the earlier try ended in ERROR; submitting the image again")
        if file_url is None:
            file_url = self._upload(hook, source)
        job: SegmentationJob = hook.submit_segmentation(file_url)
        submission = {"job_id": job.job_id, "consume_coins": job.consume_coins, "file_url": file_url}
        if self.source_path is not None:
            submission["source_path"] = str(self.source_path)
        _task_support.remember(context, _SUBMITTED_JOB_KEY, {**submission, "input": self._input_key()})
        self.log.info("Submitted %s to HitPaw as job %s (%d coins)", file_url, job.job_id, job.consume_coins)
        return submission, None

    def _defer_until_done(self, submission: dict[str, Any], context: Context) -> None:
        from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger

        end_time = _task_support.try_started_at(context) + self.timeout
        self.defer(
            trigger=SegmentationTrigger(
                job_id=submission["job_id"],
                hitpaw_conn_id=self.hitpaw_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
            ),
            method_name="execute_complete",
            kwargs={"submission": submission},
            timeout=_task_support.deferral_timeout(end_time),
        )

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        submission: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        try:
            status = _task_support.status_from_event(event)
        except HitPawError as err:
            raise _task_support.task_failure(err) from err
        # ``airflow dags test`` (2.11 and 3.3 alike) resumes with the event alone and drops the kwargs given
        # to defer(); the task state store still has the submission where Airflow keeps one.
        if not isinstance(submission, dict):
            remembered = _task_support.recall(context, _SUBMITTED_JOB_KEY)
            submission = _public_submission(remembered) if isinstance(remembered, dict) else None
        if submission is None:
            self.log.warning("The submission's details were lost on resuming; the cost is unknown")
            submission = {"job_id": status["job_id"], "consume_coins": None, "file_url": self.file_url}
        return self._finish(context, submission, status)

    def _finish(self, context: Context, submission: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """On the worker, after COMPLETED: keep the results where the user asked, show links, and say what
        went in and out (lineage)."""
        source = self._input_key()
        try:
            output = _task_support.ResultOutput.checked(
                self.output_path, self.output_conn_id, self.overwrite, self.wait_for_completion
            )
            result = output.persist(context, {**submission, **status}, source)
        except HitPawError as err:
            raise _task_support.task_failure(err) from err
        self._lineage = {"input": source, "outputs": [result.get("res_path"), result.get("mask_path")]}
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The input image as input dataset and the persisted files as outputs (openlineage provider)."""
        return _task_support.lineage(self._lineage)


def _public_submission(remembered: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in remembered.items() if key != "input"}


#: Job ids of a batch are remembered in chunks: one store value stays well under Airflow's 64 KB advice.
_BATCH_CHUNK = 500
_BATCH_KEY = "hitpaw_batch"


class SegmentImageBatchOperator(BaseOperator):
    """Segment many images in one task: submit them all, wait for them in one trigger, return all results.

    Dynamic task mapping gives one task instance and one trigger per image: fine for twenty, heavy for
    thousands (scheduler load, metadata rows, triggerer capacity, and a burst of submissions that HitPaw
    answers with 429). This operator submits with bounded concurrency (a 429 pauses the whole batch, and
    nothing is dropped), defers once to
    :class:`~airflow_provider_hitpaw.triggers.hitpaw.SegmentationBatchTrigger`, and returns (XCom) one
    result per input URL, in input order::

        {"file_url", "job_id", "status", "res_url", "mask_url", "error"}

    ``status`` is HitPaw's (``COMPLETED``, ``ERROR``, or ``CONVERTING`` for a job still open at the
    deadline) or ``NOT_SUBMITTED``; ``error`` is None or ``{"type", "code", "message"}``.

    A URL that appears twice is submitted once. On Airflow 3.3 the submitted job ids are kept in the task
    state store while they are created, so a retry waits for the jobs of the earlier try instead of paying
    for them again, and submits anew only the images whose jobs failed or were never created.

    :param file_urls: the images (templated), each checked like ``SegmentImageOperator``'s ``file_url``.
    :param source_paths: instead of ``file_urls``: images in any storage (templated); they are checked,
        then uploaded through HitPaw's pre-signed upload (at most 20 a presign call). Results then carry
        ``source_path``, and ``file_url`` is the uploaded copy's URL.
    :param source_conn_id: the connection of the sources' storage, when it needs one.
    :param output_path: where to keep every cut-out and mask (as ``SegmentImageOperator`` does); results
        then carry ``res_path`` and ``mask_path``.
    :param output_conn_id: the connection of ``output_path``'s storage, when it needs one.
    :param overwrite: ``overwrite``, ``skip`` or ``fail`` when a result file exists already.
    :param max_in_flight: submissions (and, on the worker, status requests) in flight at once.
    :param poll_interval: seconds between two polls of the same job.
    :param timeout: seconds to wait for the whole batch, from the start of this try.
    :param fail_on_error: fail the task, after every image has ended, when any failed; with False the
        task succeeds and downstream tasks judge the per-image results.
    :param deferrable: wait in the triggerer (True) or poll from this worker (False).
    """

    template_fields: Sequence[str] = ("file_urls", "source_paths", "output_path")
    ui_color = "#aed6f1"

    def __init__(
        self,
        *,
        file_urls: list[str] | None = None,
        source_paths: list[Any] | None = None,
        source_conn_id: str | None = None,
        output_path: Any = None,
        output_conn_id: str | None = None,
        overwrite: str = "overwrite",
        hitpaw_conn_id: str = "hitpaw_default",
        max_in_flight: int = 8,
        poll_interval: float = 3,
        timeout: float = 3 * 3600,
        fail_on_error: bool = True,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        if (file_urls is None) == (source_paths is None):
            raise HitPawConfigurationError(
                "file_urls", "give either file_urls or source_paths, not both or none"
            )
        _task_support.ResultOutput.checked(output_path, output_conn_id, overwrite, waits=True)
        super().__init__(**kwargs)
        self.file_urls = file_urls
        self.source_paths = source_paths
        self.source_conn_id = source_conn_id
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.overwrite = overwrite
        self.hitpaw_conn_id = hitpaw_conn_id
        self.max_in_flight = validate_positive_int(max_in_flight, "max_in_flight")
        self.poll_interval = validate_positive_seconds(poll_interval, "poll_interval")
        self.timeout = validate_timeout(timeout)
        self.fail_on_error = fail_on_error
        self.deferrable = deferrable

    def _hook(self) -> HitPawHook:
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

        return HitPawHook(self.hitpaw_conn_id, pool_size=self.max_in_flight)

    # -- submitting ------------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[dict[str, Any]]:
        urls, rejected = self._checked_urls()
        unique = list(dict.fromkeys(url for url in urls if url not in rejected))
        with self._hook() as hook:
            try:
                jobs = self._submit_all(hook, unique, context)
            except HitPawError as err:
                raise _task_support.task_failure(err) from err
            submitted = [job for job in jobs if isinstance(job, str)]
            if not submitted or not self.deferrable:
                try:
                    outcome = self._wait_in_process(hook, submitted)
                except HitPawError as err:
                    raise _task_support.task_failure(err) from err
                return self._finish(context, hook, urls, rejected, unique, jobs, outcome)
        from airflow_provider_hitpaw.triggers.hitpaw import SegmentationBatchTrigger

        end_time = _task_support.try_started_at(context) + self.timeout
        self.defer(
            trigger=SegmentationBatchTrigger(
                job_ids=submitted,
                hitpaw_conn_id=self.hitpaw_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                max_in_flight=max(16, self.max_in_flight),
            ),
            method_name="execute_complete",
            kwargs={"jobs": jobs, "inputs": urls, "rejected": rejected},
            timeout=_task_support.deferral_timeout(end_time),
        )
        raise AssertionError("defer() always raises")  # pragma: no cover

    def _checked_urls(self) -> tuple[list[str], dict[str, str]]:
        """The inputs (URLs or source paths), and those HitPaw could not take with the reason, before any
        coin is spent (and before any upload)."""
        field = "file_urls" if self.source_paths is None else "source_paths"
        given = self.file_urls if self.source_paths is None else self.source_paths
        if isinstance(given, str) or not isinstance(given, list | tuple):
            problem = f"must be a list, got {type(given).__name__}"
            raise _task_support.fail_without_retry(HitPawConfigurationError(field, problem))
        inputs = [item.strip() if isinstance(item, str) else item for item in given]
        rejected: dict[str, str] = {}
        self._sources: dict[str, tuple[str, str, int]] = {}
        for index, item in enumerate(inputs):
            try:
                if self.source_paths is None:
                    validate_file_url(item, field=f"file_urls[{index}]")
                else:
                    from airflow_provider_hitpaw import storage

                    self._sources[str(item)] = storage.read_source(item, conn_id=self.source_conn_id)
            except HitPawConfigurationError as refused:
                rejected[str(item)] = str(refused)
        if rejected and self.fail_on_error:
            shown = "; ".join(list(rejected.values())[:5])
            problem = f"{len(rejected)} input(s) HitPaw cannot take: {shown}"
            raise _task_support.fail_without_retry(HitPawConfigurationError(field, problem))
        return [str(item) for item in inputs], rejected

    def _urls_to_submit(self, hook: HitPawHook, inputs: list[str]) -> list[str | HitPawError]:
        """The URL HitPaw should fetch for each input: the URL itself, or the uploaded copy of a source."""
        if self.source_paths is None:
            return list(inputs)
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_hitpaw import storage

        # The longest validity HitPaw grants: thousands of uploads at max_in_flight take a while.
        presigned = hook.presign_uploads([self._sources[item][:2] for item in inputs], expire_seconds=7200)

        def upload(item: str, target: Any) -> str | HitPawError:
            if isinstance(target, HitPawError):
                return target
            try:
                with storage.open_source(item, conn_id=self.source_conn_id) as stream:
                    hook.upload(target, stream)
            except HitPawError as err:
                return err
            return str(target.access_url)

        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="hitpaw-upload") as pool:
            urls = list(pool.map(upload, inputs, presigned))
        self.log.info("Uploaded %d of %d sources", sum(isinstance(u, str) for u in urls), len(inputs))
        return urls

    def _submit_all(
        self, hook: HitPawHook, unique: list[str], context: Context
    ) -> list[str | dict[str, Any]]:
        """A job id (or the submission's error) per unique URL: reused from an earlier try where that job
        can still end well, submitted otherwise."""
        record = _BatchRecord(context, unique)
        jobs: list[str | dict[str, Any]] = [
            _error_dict(HitPawConfigurationError("job_id", "not submitted"))
        ] * len(unique)
        earlier = record.job_ids()
        reuse = [index for index, job_id in enumerate(earlier) if job_id]
        if reuse:
            statuses = hook.get_task_statuses(
                [str(earlier[i]) for i in reuse], max_in_flight=self.max_in_flight
            )
            for index, status in zip(reuse, statuses, strict=True):
                job_id = earlier[index]
                if isinstance(status, HitPawError) and status.retryable:
                    raise status  # cannot tell whether the job lives: better fail the try than pay twice
                if not isinstance(status, HitPawError) and not status.is_failed:
                    jobs[index] = str(job_id)
            self.log.info(
                "%d of %d images reuse the jobs of an earlier try",
                sum(isinstance(j, str) for j in jobs),
                len(unique),
            )
        missing = [index for index, job in enumerate(jobs) if not isinstance(job, str)]
        urls = self._urls_to_submit(hook, [unique[i] for i in missing])
        for index, url in zip(missing, urls, strict=True):
            if isinstance(url, HitPawError):
                jobs[index] = _error_dict(url)
        to_submit = [index for index, url in zip(missing, urls, strict=True) if isinstance(url, str)]
        progress = _SubmitProgress(self.log, len(to_submit))
        stopping: list[HitPawError] = []

        def submitted(position: int, result: SegmentationJob | HitPawError) -> None:
            index = to_submit[position]
            if isinstance(result, HitPawError):
                jobs[index] = _error_dict(result)
                if isinstance(result, _api.BATCH_STOPPING_ERRORS):
                    stopping.append(result)
            else:
                jobs[index] = result.job_id
                record.set(index, result.job_id)
            progress.report(isinstance(result, HitPawError))

        try:
            hook.submit_segmentations(
                [str(url) for url in urls if isinstance(url, str)],
                max_in_flight=self.max_in_flight,
                on_result=submitted,
            )
        finally:
            record.flush()  # what was paid for stays findable, also when the task is stopped midway
        if to_submit and len(stopping) == len(to_submit):
            raise stopping[0]  # e.g. a bad key: the same for every image, so the task fails as a whole
        return jobs

    # -- waiting ---------------------------------------------------------------------------------------

    def _wait_in_process(self, hook: HitPawHook, job_ids: list[str]) -> dict[str, Any]:
        """The blocking twin of the batch trigger: the same rules (``_api.BatchProgress``), the same
        outcome shape."""
        deadline = time.monotonic() + self.timeout
        batch = _api.BatchProgress(open_jobs=list(dict.fromkeys(job_ids)))
        while batch.open_jobs:
            round_start = time.monotonic()
            batch.absorb(list(hook.get_task_statuses(batch.open_jobs, max_in_flight=self.max_in_flight)))
            if batch.stopped_by is not None:
                raise batch.stopped_by
            self.log.info("%d/%d completed, %d failed", batch.completed, len(job_ids), len(batch.failed))
            if batch.open_jobs and time.monotonic() >= deadline:
                return {
                    "status": "timeout",
                    "completed": batch.completed,
                    "failed": batch.failed,
                    "pending": batch.open_jobs,
                }
            if batch.open_jobs:
                pause = min(
                    self.poll_interval - (time.monotonic() - round_start), deadline - time.monotonic()
                )
                time.sleep(max(0.0, pause))
        return {"status": "success", "completed": batch.completed, "failed": batch.failed, "pending": []}

    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        jobs: list[Any] | None = None,
        inputs: list[str] | None = None,
        rejected: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Resume with what the submission found, rather than reading every source again: one may have
        changed or gone meanwhile, and the jobs were paid for."""
        if not isinstance(event, dict) or event.get("status") not in ("success", "timeout", "error"):
            raise AirflowException(f"HitPaw batch trigger sent no usable event: {event!r}")
        if event["status"] == "error":
            err = _task_support.error_from_event(event, str(event.get("message")))
            raise _task_support.task_failure(err)
        if inputs is not None and rejected is not None:
            urls = list(inputs)
        else:  # ``airflow dags test`` drops the kwargs: judge the inputs again
            urls, rejected = self._checked_urls()
        unique = list(dict.fromkeys(url for url in urls if url not in rejected))
        if jobs is None:
            # ``airflow dags test`` resumes without the kwargs given to defer(); the store still knows.
            remembered = _BatchRecord(context, unique).job_ids()
            if not all(remembered):
                raise AirflowException("The batch's job ids were lost on resuming; run the task again")
            jobs = list(remembered)
        with self._hook() as hook:
            return self._finish(context, hook, urls, rejected, unique, jobs, event)

    def _finish(
        self,
        context: Context,
        hook: HitPawHook,
        urls: list[str],
        rejected: dict[str, str],
        unique: list[str],
        jobs: list[Any],
        outcome: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """One result per input URL, in input order, with the result URLs of the completed jobs."""
        failed: dict[str, str] = outcome.get("failed") or {}
        pending = set(outcome.get("pending") or [])
        done = [job for job in jobs if isinstance(job, str) and job not in failed and job not in pending]
        statuses = dict(
            zip(done, hook.get_task_statuses(done, max_in_flight=self.max_in_flight), strict=True)
        )
        by_url: dict[str, dict[str, Any]] = {}
        for url, job in zip(unique, jobs, strict=True):
            by_url[url] = _result(
                url, job, failed, pending, statuses.get(job) if isinstance(job, str) else None
            )
        if self.source_paths is not None:
            for source, result in by_url.items():
                # The input was a file; HitPaw fetched its uploaded copy (the job's original_url).
                uploaded = statuses.get(result["job_id"]) if result["job_id"] else None
                result["source_path"] = source
                result["file_url"] = getattr(uploaded, "original_url", None)
        if self.output_path is not None:
            self._keep_results(by_url)
        results = [
            by_url[url]
            if url in by_url
            else {
                **_result(url, None, {}, set(), None),
                "error": {"type": "HitPawConfigurationError", "code": None, "message": rejected[url]},
            }
            for url in urls
        ]
        if self.source_paths is not None:
            for result in results:
                if "source_path" not in result:  # refused before upload: there is no URL
                    result.update(source_path=result["file_url"], file_url=None)
        bad = [r for r in results if r["status"] != "COMPLETED" or r["error"]]
        self.log.info("Batch done: %d/%d completed, %d not", len(results) - len(bad), len(results), len(bad))
        if bad and self.fail_on_error:
            context["ti"].xcom_push(key="results", value=results)
            if not _task_support.can_remember(context):
                # Without the task state store a retry could not tell paid jobs from missing ones, and
                # would pay for every image again: fail for good, the results are in XCom.
                raise AirflowFailException(
                    f"{len(bad)} of {len(results)} images were not segmented; the per-image results are "
                    "in XCom under 'results' (no automatic retry: on this Airflow it would pay again)"
                )
            shown = "; ".join(f"{r.get('source_path') or r['file_url']}: {r['status']}" for r in bad[:5])
            raise AirflowException(
                f"{len(bad)} of {len(results)} images were not segmented ({shown}); "
                "the per-image results are in XCom under 'results'"
            )
        return results

    def _keep_results(self, by_input: dict[str, dict[str, Any]]) -> None:
        """Copy every completed image's files to ``output_path``, ``max_in_flight`` at a time, on the worker.
        A copy that fails marks its image as failed; the others are kept."""
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_hitpaw import storage

        def keep(item: tuple[str, dict[str, Any]]) -> None:
            source, result = item
            try:
                result.update(
                    storage.persist_job_results(
                        result,
                        source,
                        self.output_path,
                        overwrite=self.overwrite,
                        conn_id=self.output_conn_id,
                    )
                )
            except Exception as err:  # a storage error (permissions, credentials) is this image's alone
                failure = err if isinstance(err, HitPawError) else HitPawError(f"{type(err).__name__}: {err}")
                result["error"] = {
                    k: v for k, v in _error_dict(failure).items() if k in ("type", "code", "message")
                }

        completed = [(source, r) for source, r in by_input.items() if r["status"] == "COMPLETED"]
        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="hitpaw-keep") as pool:
            list(pool.map(keep, completed))
        self.log.info("Kept %d cut-outs and masks in %s", len(completed), self.output_path)


def _result(
    url: str, job: Any, failed: dict[str, str], pending: set[str], status: TaskStatus | HitPawError | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "file_url": url,
        "job_id": None,
        "status": "NOT_SUBMITTED",
        "res_url": None,
        "mask_url": None,
        "error": None,
    }
    if isinstance(job, dict):
        result["error"] = {k: job.get(k) for k in ("type", "code", "message")}
        return result
    if job is None:
        return result
    result["job_id"] = job
    if job in failed:
        result.update(
            status="ERROR", error={"type": "HitPawJobFailedError", "code": None, "message": failed[job]}
        )
    elif job in pending:
        result.update(
            status="CONVERTING",
            error={"type": "HitPawTimeoutError", "code": None, "message": "still open at the deadline"},
        )
    elif isinstance(status, HitPawError):
        result.update(status="UNKNOWN", error=_error_dict(status))
    elif status is not None:
        result.update(status=status.status, res_url=status.res_url, mask_url=status.mask_url)
    return result


def _error_dict(err: HitPawError) -> dict[str, Any]:
    return {
        "type": type(err).__name__,
        "code": err.code,
        "http_status": err.http_status,
        "message": str(err),
    }


class _SubmitProgress:
    def __init__(self, log: Any, total: int) -> None:
        self._log, self._total = log, total
        self._done = self._failed = 0
        self._step = max(1, total // 10)

    def report(self, failed: bool) -> None:
        self._done += 1
        self._failed += failed
        if self._done % self._step == 0 or self._done == self._total:
            self._log.info("Submitted %d/%d images, %d refused", self._done, self._total, self._failed)


class _BatchRecord:
    """The job ids of a batch, kept in Airflow's task state store so that a retry finds them.

    Aligned with the batch's unique URLs and stored in chunks; a digest of the URLs guards against
    reading a record of a different input. Written at most every few seconds while submitting (each
    write is a call to Airflow's API) and once at the end: a crash loses at most those few seconds of
    records, whose images a retry then submits again.
    """

    FLUSH_SECONDS = 2.0

    def __init__(self, context: Context, unique: list[str]) -> None:
        import hashlib

        self._context = context
        self._digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:16]
        self._ids: list[str | None] = [None] * len(unique)
        self._dirty: set[int] = set()
        self._last_flush = time.monotonic()

    def job_ids(self) -> list[str | None]:
        head = _task_support.recall(self._context, _BATCH_KEY)
        if not isinstance(head, dict) or head.get("digest") != self._digest:
            return list(self._ids)
        for chunk in range(int(head.get("chunks", 0))):
            values = _task_support.recall(self._context, f"{_BATCH_KEY}_{chunk}") or []
            for offset, job_id in enumerate(values):
                index = chunk * _BATCH_CHUNK + offset
                if index < len(self._ids) and isinstance(job_id, str):
                    self._ids[index] = job_id
        return list(self._ids)

    def set(self, index: int, job_id: str) -> None:
        self._ids[index] = job_id
        self._dirty.add(index // _BATCH_CHUNK)
        if time.monotonic() - self._last_flush >= self.FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self._dirty:
            return
        chunks = (len(self._ids) + _BATCH_CHUNK - 1) // _BATCH_CHUNK
        for chunk in sorted(self._dirty):
            values = self._ids[chunk * _BATCH_CHUNK : (chunk + 1) * _BATCH_CHUNK]
            if not _task_support.remember(self._context, f"{_BATCH_KEY}_{chunk}", values):
                self._dirty.clear()
                return  # no store on this Airflow
        _task_support.remember(self._context, _BATCH_KEY, {"digest": self._digest, "chunks": chunks})
        self._dirty.clear()
        self._last_flush = time.monotonic()
