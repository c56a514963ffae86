"""A sensor that waits for a HitPaw job, deferring to the triggerer by default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)

from airflow_provider_hitpaw import _api, _deferral, _metrics, _state_store
from airflow_provider_hitpaw._connection_form import DEFAULT_CONN_ID
from airflow_provider_hitpaw._events import JobEvent, Outcome
from airflow_provider_hitpaw._failures import fail_without_retry, task_failure
from airflow_provider_hitpaw._results import ResultOutput, made_from_kept, push_links, result_links
from airflow_provider_hitpaw._wait import is_unreadable_poll
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawError,
    HitPawJobFailedError,
    HitPawStorageError,
    HitPawTimeoutError,
)
from airflow_provider_hitpaw.operators.segment_image import not_kept_failure
from airflow_provider_hitpaw.validation import (
    validate_event_hold,
    validate_job_id,
    validate_poll_interval,
    validate_timeout,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

#: Where the sensor keeps the start of its first try, so that a retry does not restart the clock.
_FIRST_START_KEY = "hitpaw_sensor_first_start"


class SegmentationSensor(BaseSensorOperator):
    """Wait until a HitPaw job is ``COMPLETED``; return its status fields (to XCom).

    Deferrable by default: after one quick status check, the wait moves to
    :class:`~airflow_provider_hitpaw.triggers.hitpaw.SegmentationTrigger` and frees the worker slot. The
    deadline is ``timeout`` counted from the sensor's first start: on Airflow 3.3 that start is kept in
    the task state store, so neither a retry nor a triggerer restart extends it; on older Airflow the
    current try's start counts. Not deferrable, it is a classic sensor, timed by Airflow's own sensor
    timeout, which starts again with each try.

    A job that ended in ``ERROR`` fails the sensor without retries: that job will never change. A status
    poll that fails for good without HitPaw saying the job is unknown (a gateway's bare 404, an answer
    over the cap) fails the try with Airflow's retries: the job has not failed, and a retry polls it again.

    :param job_id: the job to wait for (templated), usually ``SegmentImageOperator``'s XCom.
    :param file_url: the image that was submitted as ``job_id`` (templated), when known: the completed
        job's ``original_url`` must then be that image (else ``HitPawUntrustedAnswerError``, nothing
        kept), and results are named after it, as ``SegmentImageOperator`` names them. Without it, the
        sensor cannot check which image the job is, and says so.
    :param hitpaw_conn_id: the ``hitpaw`` connection.
    :param poll_interval: seconds between two status polls; also the poke interval when not deferrable.
    :param min_deferred_seconds: the task stays deferred at least this long, however fast the job: on
        Airflow 3 an event within seconds of the deferral can fail the resumed try (an Airflow race);
        0 turns the hold off; None (the default) holds ``[hitpaw] min_deferred_seconds`` (10 s).
    :param deferrable: wait in the triggerer (True) or as a classic sensor in ``mode`` poke/reschedule.
    :param output_path: where to keep the cut-out and the mask, as ``SegmentImageOperator`` does (named
        after ``file_url`` when given, else the job's original URL); adds ``res_path`` and ``mask_path``
        to the result.
    :param output_conn_id: the connection of ``output_path``'s storage, when it needs one.
    :param overwrite: ``overwrite``, ``skip`` or ``fail`` when a result file exists already; ``fail``
        refuses at the first look, not once the job completed (files this very job kept are accepted).
    :param finish: storefront images made from the kept cut-out (templated), as the operators' ``finish``
        (no blurred background: the sensor cannot read the photo sent).
    :param output_layout: ``flat`` or ``mirror``, as ``SegmentImageOperator`` names results; ``mirror``
        needs ``file_url`` (folders are never named by an answer) and ``input_root`` (templated).
    """

    template_fields: Sequence[str] = ("job_id", "file_url", "output_path", "input_root", "finish")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        job_id: str,
        hitpaw_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 3,
        min_deferred_seconds: float | None = None,
        deferrable: bool = True,
        output_path: Any = None,
        output_conn_id: str | None = None,
        overwrite: str = "overwrite",
        file_url: str | None = None,
        output_layout: str = "flat",
        input_root: str | None = None,
        finish: Any = None,
        **kwargs: Any,
    ) -> None:
        ResultOutput.checked(
            output_path,
            output_conn_id,
            overwrite,
            waits=True,
            output_layout=output_layout,
            input_root=input_root,
            root_needed=True,
            finish=finish,
            has_original=False,
        )
        if output_layout == "mirror" and file_url is None:
            raise HitPawConfigurationError(
                "file_url", "output_layout='mirror' names folders after the submitted image: give it"
            )
        if file_url is not None and not isinstance(file_url, str):
            raise HitPawConfigurationError("file_url", f"must be a URL, got {type(file_url).__name__}")
        # Checked first, so that a bad value is reported under its own name, not as Airflow's poke_interval.
        poll_interval = validate_poll_interval(poll_interval)
        kwargs.setdefault("poke_interval", poll_interval)
        if "timeout" in kwargs:
            # Airflow's own default is 7 days; more than HitPaw keeps a job (8) means nothing, and
            # overflows (before Airflow itself could say so).
            kwargs["timeout"] = validate_timeout(kwargs["timeout"])
        super().__init__(**kwargs)
        self.job_id = job_id
        self.hitpaw_conn_id = hitpaw_conn_id
        self.poll_interval = poll_interval
        self.min_deferred_seconds = validate_event_hold(min_deferred_seconds)
        self.deferrable = deferrable
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.overwrite = overwrite
        self.file_url = file_url
        self.output_layout = output_layout
        self.input_root = input_root
        self.finish = finish
        self._looked_for_results = False

    operator_extra_links = result_links()

    def _output(self) -> ResultOutput:
        output = ResultOutput.checked(
            self.output_path,
            self.output_conn_id,
            self.overwrite,
            waits=True,
            output_layout=self.output_layout,
            input_root=self.input_root,
            root_needed=True,
            finish=self.finish,
            has_original=False,
        )
        if self.output_layout == "mirror" and self._submitted_url() is None:
            raise HitPawConfigurationError("file_url", "rendered to nothing; output_layout='mirror' needs it")
        return output.laid_out(self.output_layout, self.input_root, None, [self._submitted_url() or ""])

    def _submitted_url(self) -> str | None:
        """The image submitted as this job, when the DAG said (a template may render to nothing)."""
        return self.file_url.strip() if isinstance(self.file_url, str) and self.file_url.strip() else None

    def _source(self, status: dict[str, Any]) -> str:
        """What the kept files are named after: the submitted image when known, else the job's own."""
        return self._submitted_url() or str(status.get("original_url") or status.get("job_id") or "")

    def _refuse_existing_results(self, status: dict[str, Any]) -> None:
        """Under ``overwrite="fail"``, refuse result files already there at the first look, instead of
        after the whole wait; files this very job kept (an earlier try's) are accepted."""
        if self.output_path is None or self.overwrite != "fail" or self._looked_for_results:
            return
        if self._submitted_url() is None and not status.get("original_url"):
            return  # the names are not known yet: judged when the job completes
        from airflow_provider_hitpaw import storage

        storage.refuse_existing_results(
            self.output_path,
            self._source(status),
            conn_id=self.output_conn_id,
            own_job_id=str(status.get("job_id") or self.job_id),
            layout=self._output().layout,
        )
        self._looked_for_results = True

    def _finish(self, context: Context, status: dict[str, Any]) -> dict[str, Any]:
        """Keep the results where asked (on this worker, never in the triggerer) and show their links,
        once the job is known to be the image submitted (where the DAG said which)."""
        job_id = str(status.get("job_id") or self.job_id)
        try:
            self._check_bound_to_input(job_id, status)
            with self._hook() as hook:
                result = self._output().persist(context, status, self._source(status), hook)
                result.update(made_from_kept(self._output(), result))
        except HitPawStorageError as err:
            failure = not_kept_failure(err, job_id, status)
            raise failure from failure.__cause__
        except HitPawError as err:
            raise task_failure(err) from err
        except Exception as err:  # a store's own error escaped: say what completed, and where it is
            if self.output_path is None:
                raise
            failure = not_kept_failure(err, job_id, status)
            raise failure from failure.__cause__
        # Counted once the results are kept; the sensor does not know when the job was submitted.
        _metrics.count_end_once(context, str(status.get("job_id")), True)
        return _api.without_credentials(result)

    def _check_bound_to_input(self, job_id: str, status: dict[str, Any]) -> None:
        """The job's ``original_url`` must be the image submitted, when ``file_url`` says which."""
        submitted = self._submitted_url()
        if submitted is None:
            self.log.info(
                "Job %r is taken as it is: given only its id (no file_url), the sensor cannot check "
                "which image it segmented",
                job_id,
            )
            return
        from airflow_provider_hitpaw import storage

        storage.check_answered_for(job_id, status.get("original_url"), submitted)

    def _hook(self) -> HitPawHook:
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

        return HitPawHook(self.hitpaw_conn_id)

    def _validated_job_id(self) -> str:
        try:
            return validate_job_id(self.job_id)
        except HitPawError as err:
            raise fail_without_retry(err) from err

    def poke(self, context: Context) -> PokeReturnValue | bool:
        job_id = self._validated_job_id()
        try:
            with self._hook() as hook:
                status = hook.get_task_status(job_id)
        except HitPawError as err:
            if err.retryable:
                self.log.warning("Could not poll HitPaw job %r (%s); poking again later", job_id, err)
                return False
            if is_unreadable_poll(err):
                # The poll failed, not the job: a plain failure, which Airflow's retries poll again.
                raise JobEvent.unreadable_poll(job_id, err, None).failure() from err
            raise fail_without_retry(err) from err
        self.log.info("HitPaw job %r is %s", job_id, status.status)
        if status.is_failed:
            _metrics.count_end_once(context, job_id, False)
            raise fail_without_retry(HitPawJobFailedError.for_job(job_id, status.original_url))
        if status.is_completed:
            return PokeReturnValue(is_done=True, xcom_value=self._finish(context, status.to_dict()))
        try:
            self._refuse_existing_results(status.to_dict())
        except HitPawError as err:
            raise task_failure(err) from err
        return False

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        job_id = self._validated_job_id()
        try:
            self._output().check_storage()
        except HitPawError as err:
            raise task_failure(err) from err
        # One quick look first: a job that is already done needs no trigger at all.
        done = self.poke(context)
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        end_time = self._deadline(context)
        from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger

        push_links(context, {"cutout": "", "mask": ""})
        self.defer(
            trigger=SegmentationTrigger(
                job_id=job_id,
                hitpaw_conn_id=self.hitpaw_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                not_before=_deferral.event_not_before(self.min_deferred_seconds),
            ),
            method_name="execute_complete",
            timeout=_deferral.deferral_timeout(end_time),
        )

    def _deadline(self, context: Context) -> float:
        first_start = _state_store.recall(context, _FIRST_START_KEY)
        if not isinstance(first_start, int | float):
            first_start = _deferral.try_started_at(context)
            _state_store.remember(context, _FIRST_START_KEY, first_start)
            if _state_store.retry_without_memory(context, int(self.retries or 0)):
                self.log.warning(
                    "This Airflow keeps nothing across tries (the task state store came with 3.3): the "
                    "timeout of %g s counts from this retry's start, not from the first try's",
                    self.timeout,
                )
        return float(first_start) + self.timeout

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral Airflow ended itself fails as a sensor time-out that says what to check."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowException as err:
            if next_method != _deferral.FAIL_METHOD:
                raise
            message = _deferral.deferral_failure(err, f"The wait for HitPaw job {self.job_id!r}")
            if self.soft_fail:
                raise AirflowSkipException(f"{message} (soft_fail)") from err
            raise AirflowSensorTimeout(message) from err

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Turn the trigger's event into the task's result, or into the right kind of failure."""
        try:
            parsed = JobEvent.from_payload(event)
        except HitPawError as err:
            raise fail_without_retry(err) from err
        if parsed.unreadable and parsed.outcome is Outcome.ERROR:
            # The poll failed, not the job: a plain failure, which Airflow's retries poll again.
            raise parsed.failure()
        try:
            status = parsed.raise_unless_completed()
        except HitPawTimeoutError as err:
            if self.soft_fail:
                raise AirflowSkipException(f"{err} (soft_fail)") from err
            raise AirflowSensorTimeout(str(err)) from err
        except HitPawError as err:
            if isinstance(err, HitPawJobFailedError):
                _metrics.count_end_once(context, self.job_id, False)
            # Job ERROR and permanent API errors alike: waiting again on this job cannot help.
            raise fail_without_retry(err) from err
        return self._finish(context, status)
