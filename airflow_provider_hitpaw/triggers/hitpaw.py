"""The trigger that waits for a HitPaw job in the triggerer, so no worker slot is held meanwhile."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import (
    HitPawError,
)
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook
from airflow_provider_hitpaw.validation import validate_job_id, validate_positive_seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_hitpaw._api import TaskStatus

#: The event ``status`` values: what the waiting task must do next.
EVENT_SUCCESS = "success"
EVENT_ERROR = "error"
EVENT_TIMEOUT = "timeout"


class _HitPawTrigger(BaseTrigger):
    """What both triggers share: one hook on the process's shared client, closed on every path (also on
    cancellation, when the triggerer stops or the task is cleared), and exactly one event."""

    hitpaw_conn_id: str

    def _make_hook(self) -> HitPawAsyncHook:
        # Every trigger of the triggerer polls through one shared client per base URL.
        return HitPawAsyncHook(self.hitpaw_conn_id, share_client=True)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with self._make_hook() as hook:
            payload = await self._wait(hook)
        # Yielded after the client is let go: the triggerer may take its time to close this generator.
        yield TriggerEvent(payload)

    async def _wait(self, hook: HitPawAsyncHook) -> dict[str, Any]:
        raise NotImplementedError


def _error_fields(err: HitPawError) -> dict[str, Any]:
    """What an event says of an error, so that the task rebuilds the same family (retryable or not)."""
    return {"code": err.code, "http_status": err.http_status, "error_type": type(err).__name__}


class SegmentationTrigger(_HitPawTrigger):
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

    async def _wait(self, hook: HitPawAsyncHook) -> dict[str, Any]:
        try:
            await hook.prepare()
        except HitPawError as err:
            return self._event(EVENT_ERROR, str(err), None, **_error_fields(err))
        last_status: str | None = None
        last_fault: str | None = None
        while True:
            status: TaskStatus | None = None
            try:
                # A poll (with its own retries) must not run on far past the deadline: Airflow's backstop
                # would then fire instead of this trigger's timeout event.
                async with asyncio.timeout(max(1.0, self.end_time - time.time())):
                    status = await hook.get_task_status(self.job_id)
            except TimeoutError:
                last_fault = "TimeoutError"
            except HitPawError as err:
                if not err.retryable:
                    return self._event(EVENT_ERROR, str(err), last_status, **_error_fields(err))
                # A fault that outlasted the call's own retries: the job may be fine, so poll on.
                # Logged once per kind of fault, not once per poll.
                if type(err).__name__ != last_fault:
                    self.log.warning("Polling HitPaw job %s failed (%s); polling on", self.job_id, err)
                    last_fault = type(err).__name__
            if status is not None:
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


class SegmentationBatchTrigger(_HitPawTrigger):
    """Wait for many jobs in one trigger, over one shared client, until all have ended or ``end_time``.

    Each round polls every open job once, the polls spread evenly over ``poll_interval`` (at most
    ``max_in_flight`` at a time) rather than fired in a burst that HitPaw would answer with 429.

    The single event stays small for thousands of jobs: it counts the completed jobs and lists only the
    failed ones (with a short reason) and, on a timeout, the ones still open. The waiting task fetches the
    result URLs of the completed jobs itself, on a worker, where thousands of them are no burden.

    Payload: ``status`` (``success`` when every job ended, ``timeout``, or ``error`` when the batch as a
    whole could not go on, with HitPaw's ``code``), ``message``, ``completed`` (a count), ``failed``
    (job id -> reason), ``pending`` (job ids still open at the deadline).
    """

    def __init__(
        self,
        job_ids: list[str],
        hitpaw_conn_id: str,
        poll_interval: float,
        end_time: float,
        max_in_flight: int = 16,
    ) -> None:
        super().__init__()
        self.job_ids = [validate_job_id(job_id) for job_id in job_ids]
        self.hitpaw_conn_id = hitpaw_conn_id
        self.poll_interval = validate_positive_seconds(poll_interval, "poll_interval")
        self.end_time = float(end_time)
        self.max_in_flight = max(1, int(max_in_flight))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_ids": list(self.job_ids),
                "hitpaw_conn_id": self.hitpaw_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_in_flight": self.max_in_flight,
            },
        )

    async def _wait(self, hook: HitPawAsyncHook) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        batch = _api.BatchProgress(open_jobs=list(dict.fromkeys(self.job_ids)))
        total = len(batch.open_jobs)
        progress = _Progress(self.log, total)
        limiter = asyncio.Semaphore(self.max_in_flight)
        try:
            # Read the connection once, before the first round: otherwise the first polls would all wait
            # for it and then go out in the very burst the spacing avoids.
            await hook.prepare()
        except HitPawError as err:
            return self._event("error", str(err), batch, **_error_fields(err))

        async def poll(job_id: str) -> TaskStatus | HitPawError:
            async with limiter:
                try:
                    return await hook.get_task_status(job_id)
                except HitPawError as err:
                    return err

        while batch.open_jobs:
            round_start = loop.time()
            batch.absorb(await self._poll_round(batch.open_jobs, poll, loop))
            if batch.stopped_by is not None:
                stop = batch.stopped_by
                return self._event("error", str(stop), batch, **_error_fields(stop))
            progress.report(batch.completed, len(batch.failed))
            if not batch.open_jobs:
                break
            if time.time() >= self.end_time:
                message = f"{len(batch.open_jobs)} of {total} jobs were still open at the deadline"
                return self._event("timeout", message, batch)
            await asyncio.sleep(
                max(0.0, min(round_start + self.poll_interval - loop.time(), self.end_time - time.time()))
            )
        progress.report(batch.completed, len(batch.failed), final=True)
        message = f"{batch.completed} of {total} completed, {len(batch.failed)} failed"
        return self._event("success", message, batch)

    async def _poll_round(
        self, open_jobs: list[str], poll: Any, loop: asyncio.AbstractEventLoop
    ) -> list[TaskStatus | HitPawError | None]:
        """Poll every open job once, spread over the interval; None for a job left unpolled because the
        deadline came first. Polls still running when the round is cancelled are cancelled with it."""
        round_start = loop.time()
        spacing = self.poll_interval / len(open_jobs)
        polls: list[asyncio.Future[TaskStatus | HitPawError]] = []
        try:
            for index, job_id in enumerate(open_jobs):
                if time.time() >= self.end_time:
                    break  # a round must not run on long past the deadline (Airflow's own would fire)
                delay = round_start + index * spacing - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                polls.append(asyncio.ensure_future(poll(job_id)))
            done: list[TaskStatus | HitPawError | None] = list(await asyncio.gather(*polls))
        finally:
            for pending in polls:
                pending.cancel()
        return done + [None] * (len(open_jobs) - len(done))

    @staticmethod
    def _event(
        outcome: str,
        message: str,
        batch: _api.BatchProgress,
        code: int | None = None,
        http_status: int | None = None,
        error_type: str | None = None,
    ) -> dict[str, Any]:
        return {
            "status": outcome,
            "message": message,
            "completed": batch.completed,
            "failed": dict(batch.failed),
            "pending": list(batch.open_jobs) if outcome != "success" else [],
            "code": code,
            "http_status": http_status,
            "error_type": error_type,
        }


class _Progress:
    """Progress lines at a readable cadence: every tenth of the batch or every 30 s, not every poll."""

    def __init__(self, log: Any, total: int, every_seconds: float = 30.0) -> None:
        self._log = log
        self._total = total
        self._every = every_seconds
        self._step = max(1, total // 10)
        self._last_time = time.monotonic()
        self._last_done = 0

    def report(self, completed: int, failed: int, *, final: bool = False) -> None:
        done = completed + failed
        now = time.monotonic()
        if final or done - self._last_done >= self._step or now - self._last_time >= self._every:
            self._log.info("%d/%d completed, %d failed", completed, self._total, failed)
            self._last_done, self._last_time = done, now
