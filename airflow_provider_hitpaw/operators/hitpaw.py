"""Operators that submit images to HitPaw's segmentation.

DAG files import this module on every parse, so it imports neither HTTP clients nor the hooks at the top:
they are loaded when a task runs.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_provider_hitpaw import _task_support
from airflow_provider_hitpaw.exceptions import HitPawError
from airflow_provider_hitpaw.validation import validate_file_url, validate_positive_seconds, validate_timeout

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_hitpaw._api import SegmentationJob, TaskStatus
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

#: Where a try keeps the job it submitted, so that the next try waits for it instead of paying again.
_SUBMITTED_JOB_KEY = "hitpaw_submitted_job"
_DEFERRAL_GRACE = timedelta(seconds=60)


class SegmentImageOperator(BaseOperator):
    """Submit one image to HitPaw's segmentation and, by default, wait for the cut-out.

    Returns (XCom) ``job_id``, ``consume_coins`` and ``file_url``; when it waited, also the task-status
    fields ``status``, ``res_url``, ``mask_url`` and ``original_url``.

    The URL is checked before anything is sent: a URL HitPaw cannot take fails the task at once, without
    retries and without spending coins. A job that ends in ``ERROR`` fails the task normally, so the
    task's retries submit the image again. On Airflow 3.3 the submitted job is remembered in the task
    state store, so a retry after a crash or a time-out waits for that job instead of paying for a new one.

    :param file_url: public http(s) URL of a .jpg, .jpeg, .png or .webp image (templated).
    :param hitpaw_conn_id: the ``hitpaw`` connection.
    :param wait_for_completion: wait for the job to end (True) or return right after submitting.
    :param deferrable: wait in the triggerer (True) or poll in this worker (False).
    :param poll_interval: seconds between two status polls.
    :param timeout: seconds to wait for the job, counted from the start of this try. HitPaw warns that a
        job can stay ``CONVERTING`` for more than 15 minutes under load, hence the hour.
    """

    template_fields: Sequence[str] = ("file_url",)
    ui_color = "#aed6f1"

    def __init__(
        self,
        *,
        file_url: str,
        hitpaw_conn_id: str = "hitpaw_default",
        wait_for_completion: bool = True,
        deferrable: bool = True,
        poll_interval: float = 3,
        timeout: float = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.file_url = file_url
        self.hitpaw_conn_id = hitpaw_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        # Checked at parse time: a DAG with a nonsensical wait should not load, let alone run.
        self.poll_interval = validate_positive_seconds(poll_interval, "poll_interval")
        self.timeout = validate_timeout(timeout)

    def _hook(self) -> HitPawHook:
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

        return HitPawHook(self.hitpaw_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            file_url = validate_file_url(self.file_url)
        except HitPawError as err:
            raise _task_support.fail_without_retry(err) from err
        with self._hook() as hook:
            try:
                submission, status = self._submit_or_reattach(hook, file_url, context)
                if status is not None and status.is_completed:
                    return {**submission, **status.to_dict()}
                if not self.wait_for_completion:
                    return submission
                if not self.deferrable:
                    status = hook.wait_for_completion(
                        submission["job_id"], poll_interval=self.poll_interval, timeout=self.timeout
                    )
                    return {**submission, **status.to_dict()}
            except HitPawError as err:
                raise _task_support.task_failure(err) from err
        self._defer_until_done(submission, context)
        raise AssertionError("defer() always raises")  # pragma: no cover

    def _submit_or_reattach(
        self, hook: HitPawHook, file_url: str, context: Context
    ) -> tuple[dict[str, Any], TaskStatus | None]:
        """Return the job to wait for: the one an earlier try submitted when it can still end well,
        else a new one."""
        earlier = _task_support.recall(context, _SUBMITTED_JOB_KEY)
        if isinstance(earlier, dict) and earlier.get("file_url") == file_url and earlier.get("job_id"):
            try:
                status = hook.get_task_status(earlier["job_id"])
            except HitPawError as err:
                if err.retryable:
                    raise
                self.log.info("The job of the earlier try is gone (%s); submitting again", err)
            else:
                if not status.is_failed:
                    self.log.info(
                        "Waiting for job %s, submitted by an earlier try (now %s), instead of paying again",
                        earlier["job_id"],
                        status.status,
                    )
                    return dict(earlier), status
                self.log.info("The job of the earlier try ended in ERROR; submitting the image again")
        job: SegmentationJob = hook.submit_segmentation(file_url)
        submission = {"job_id": job.job_id, "consume_coins": job.consume_coins, "file_url": file_url}
        _task_support.remember(context, _SUBMITTED_JOB_KEY, submission)
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
            timeout=timedelta(seconds=max(0.0, end_time - time.time())) + _DEFERRAL_GRACE,
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
        submission = submission or _task_support.recall(context, _SUBMITTED_JOB_KEY)
        if not isinstance(submission, dict):
            self.log.warning("The submission's details were lost on resuming; the cost is unknown")
            submission = {"job_id": status["job_id"], "consume_coins": None, "file_url": self.file_url}
        return {**submission, **status}
