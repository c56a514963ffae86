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

from airflow_provider_hitpaw import _deferral, _metrics, _state_store
from airflow_provider_hitpaw._connection_form import DEFAULT_CONN_ID
from airflow_provider_hitpaw._events import JobEvent
from airflow_provider_hitpaw._failures import fail_without_retry, task_failure
from airflow_provider_hitpaw._results import ResultOutput, push_links, result_links
from airflow_provider_hitpaw.exceptions import HitPawError, HitPawJobFailedError, HitPawTimeoutError
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

    A job that ended in ``ERROR`` fails the sensor without retries: that job will never change.

    :param job_id: the job to wait for (templated), usually ``SegmentImageOperator``'s XCom.
    :param hitpaw_conn_id: the ``hitpaw`` connection.
    :param poll_interval: seconds between two status polls; also the poke interval when not deferrable.
    :param min_deferred_seconds: the task stays deferred at least this long, however fast the job: on
        Airflow 3 an event within seconds of the deferral can fail the resumed try (an Airflow race);
        0 turns the hold off; None (the default) holds ``[hitpaw] min_deferred_seconds`` (10 s).
    :param deferrable: wait in the triggerer (True) or as a classic sensor in ``mode`` poke/reschedule.
    :param output_path: where to keep the cut-out and the mask, as ``SegmentImageOperator`` does (named
        after the job's original URL); adds ``res_path`` and ``mask_path`` to the result.
    :param output_conn_id: the connection of ``output_path``'s storage, when it needs one.
    :param overwrite: ``overwrite``, ``skip`` or ``fail`` when a result file exists already.
    """

    template_fields: Sequence[str] = ("job_id", "output_path")
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
        **kwargs: Any,
    ) -> None:
        ResultOutput.checked(output_path, output_conn_id, overwrite, waits=True)
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

    operator_extra_links = result_links()

    def _output(self) -> ResultOutput:
        return ResultOutput.checked(self.output_path, self.output_conn_id, self.overwrite, waits=True)

    def _finish(self, context: Context, status: dict[str, Any]) -> dict[str, Any]:
        """Keep the results where asked (on this worker, never in the triggerer) and show their links."""
        source = status.get("original_url") or status.get("job_id") or ""
        try:
            with self._hook() as hook:
                result = self._output().persist(context, status, str(source), hook)
        except HitPawError as err:
            raise task_failure(err) from err
        # Counted once the results are kept; the sensor does not know when the job was submitted.
        _metrics.count_end_once(context, str(status.get("job_id")), True)
        return result

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
            raise fail_without_retry(err) from err
        self.log.info("HitPaw job %r is %s", job_id, status.status)
        if status.is_failed:
            _metrics.count_end_once(context, job_id, False)
            raise fail_without_retry(HitPawJobFailedError.for_job(job_id, status.original_url))
        if status.is_completed:
            return PokeReturnValue(is_done=True, xcom_value=self._finish(context, status.to_dict()))
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
            status = JobEvent.from_payload(event).raise_unless_completed()
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
