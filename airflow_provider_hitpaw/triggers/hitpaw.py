"""The trigger that waits for a HitPaw job in the triggerer, so no worker slot is held meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_hitpaw.exceptions import HitPawError
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook
from airflow_provider_hitpaw.validation import validate_job_id, validate_positive_seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

#: The event ``status`` values: what the waiting task must do next.
EVENT_SUCCESS = "success"
EVENT_ERROR = "error"
EVENT_TIMEOUT = "timeout"


class SegmentationTrigger(BaseTrigger):
    """Poll a job's status until it ends or ``end_time`` passes, then fire exactly one event.

    :param job_id: the HitPaw job to wait for.
    :param hitpaw_conn_id: the ``hitpaw`` connection; only its id is serialized, never the key.
    :param poll_interval: seconds between two polls (HitPaw recommends 2 to 5).
    :param end_time: the deadline as a Unix time. Absolute, so a triggerer that restarts this trigger
        does not extend the wait.

    The event's payload is a JSON dict: ``status`` (``success``, ``error`` or ``timeout``), ``job_id``,
    ``message``, HitPaw's own status as ``job_status``, ``res_url``, ``mask_url``, ``original_url``,
    and on an API error HitPaw's ``code`` and ``http_status``.
    """

    def __init__(self, job_id: str, hitpaw_conn_id: str, poll_interval: float, end_time: float) -> None:
        super().__init__()
        self.job_id = validate_job_id(job_id)
        self.hitpaw_conn_id = hitpaw_conn_id
        self.poll_interval = validate_positive_seconds(poll_interval, "poll_interval")
        self.end_time = float(end_time)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "hitpaw_conn_id": self.hitpaw_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
            },
        )

    def _make_hook(self) -> HitPawAsyncHook:
        # Every trigger of the triggerer polls through one shared client per base URL.
        return HitPawAsyncHook(self.hitpaw_conn_id, share_client=True)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with self._make_hook() as hook:
            yield TriggerEvent(await self._wait(hook))

    async def _wait(self, hook: HitPawAsyncHook) -> dict[str, Any]:
        last_status: str | None = None
        last_fault: str | None = None
        while True:
            try:
                status = await hook.get_task_status(self.job_id)
            except HitPawError as err:
                if not err.retryable:
                    return self._event(
                        EVENT_ERROR, str(err), last_status, code=err.code, http_status=err.http_status
                    )
                # A fault that outlasted the call's own retries: the job may be fine, so poll on.
                # Logged once per kind of fault, not once per poll.
                if type(err).__name__ != last_fault:
                    self.log.warning("Polling HitPaw job %s failed (%s); polling on", self.job_id, err)
                    last_fault = type(err).__name__
            else:
                last_fault = None
                if status.status != last_status:
                    self.log.info("HitPaw job %s is %s", self.job_id, status.status)
                    last_status = status.status
                if status.is_completed:
                    return self._event(
                        EVENT_SUCCESS, f"HitPaw job {self.job_id} completed", status.status, status.to_dict()
                    )
                if status.is_failed:
                    return self._event(
                        EVENT_ERROR,
                        f"HitPaw job {self.job_id} ended with status ERROR",
                        status.status,
                        status.to_dict(),
                    )
            remaining = self.end_time - time.time()
            if remaining <= 0:
                return self._event(
                    EVENT_TIMEOUT,
                    f"HitPaw job {self.job_id} was still {last_status or 'unknown'} at the deadline",
                    last_status,
                )
            await asyncio.sleep(min(self.poll_interval, remaining))

    def _event(
        self,
        outcome: str,
        message: str,
        job_status: str | None,
        fields: dict[str, str | None] | None = None,
        **error: Any,
    ) -> dict[str, Any]:
        fields = fields or {}
        return {
            "status": outcome,
            "job_id": self.job_id,
            "message": message,
            "job_status": job_status,
            "res_url": fields.get("res_url"),
            "mask_url": fields.get("mask_url"),
            "original_url": fields.get("original_url"),
            **error,
        }
