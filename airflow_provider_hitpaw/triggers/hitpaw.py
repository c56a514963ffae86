"""The triggers that wait for HitPaw jobs in the triggerer, so no worker slot is held meanwhile.

Both follow the wait rules of :mod:`airflow_provider_hitpaw._wait` and fire one event of
:mod:`airflow_provider_hitpaw._events`; every poll is bounded by the time left to the deadline, so the
trigger's own timeout event always comes before Airflow's backstop.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_hitpaw._events import BatchEvent, ErrorInfo, JobEvent, Outcome
from airflow_provider_hitpaw._wait import BatchWatch, JobWatch
from airflow_provider_hitpaw.exceptions import HitPawError
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook
from airflow_provider_hitpaw.validation import validate_job_id, validate_positive_seconds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from airflow_provider_hitpaw._api import TaskStatus


def _now() -> float:
    """The Unix time, in which deadlines are given: the triggers read it here and nowhere else.

    Every wait of theirs goes through the event loop (``asyncio.sleep``, ``asyncio.wait``), so a test that
    runs them on a loop whose clock it drives, and points this (and :func:`_monotonic`) at that clock,
    controls all the time they see.
    """
    return time.time()


def _monotonic() -> float:
    """The clock of the progress lines' cadence (see :func:`_now`)."""
    return time.monotonic()


class _HitPawTrigger(BaseTrigger):
    """What both triggers share: one hook on the process's shared client, closed on every path (also on
    cancellation, when the triggerer stops or the task is cleared), and exactly one event."""

    hitpaw_conn_id: str
    #: No event before this Unix time (see :data:`~airflow_provider_hitpaw._deferral.EVENT_HOLD_SECONDS`).
    not_before: float | None = None

    def _make_hook(self) -> HitPawAsyncHook:
        # Every trigger of the triggerer polls through one shared client per base URL.
        return HitPawAsyncHook(self.hitpaw_conn_id, share_client=True)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        async with self._make_hook() as hook:
            payload = await self._wait(hook)
        # Held, if asked, so that the task resumes only once Airflow has settled the try that deferred:
        # an event that comes within seconds of the deferral can fail the resumed try (see _deferral).
        hold = (self.not_before or 0.0) - _now()
        if hold > 0:
            await asyncio.sleep(hold)
        # Yielded after the client is let go: the triggerer may take its time to close this generator.
        yield TriggerEvent(payload)

    async def _wait(self, hook: HitPawAsyncHook) -> dict[str, Any]:
        raise NotImplementedError

    def _serialized(self, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs


class SegmentationTrigger(_HitPawTrigger):
    """Poll a job's status until it ends or ``end_time`` passes, then fire exactly one event.

    :param job_id: the HitPaw job to wait for.
    :param hitpaw_conn_id: the ``hitpaw`` connection; only its id is serialized, never the key.
    :param poll_interval: seconds between two polls (HitPaw recommends 2 to 5).
    :param end_time: the deadline as a Unix time. Absolute, so a triggerer that restarts this trigger
        does not extend the wait.
    :param not_before: fire no event before this Unix time (the job is still polled meanwhile).

    The event is a :class:`~airflow_provider_hitpaw._events.JobEvent`'s payload. A poll that fails for
    good without HitPaw saying anything of the job ends the wait with an error event marked
    ``unreadable``, carrying the real error: the job itself has not failed.
    """

    def __init__(
        self,
        job_id: str,
        hitpaw_conn_id: str,
        poll_interval: float,
        end_time: float,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.job_id = validate_job_id(job_id)
        self.hitpaw_conn_id = hitpaw_conn_id
        self.poll_interval = validate_positive_seconds(poll_interval, "poll_interval")
        self.end_time = float(end_time)
        self.not_before = None if not_before is None else float(not_before)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return self._serialized(
            {
                "job_id": self.job_id,
                "hitpaw_conn_id": self.hitpaw_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "not_before": self.not_before,
            }
        )

    async def _wait(self, hook: HitPawAsyncHook) -> dict[str, Any]:
        watch = JobWatch(self.job_id, self.end_time, self.poll_interval, self.log)
        try:
            await hook.prepare()
        except HitPawError as err:
            return JobEvent.failed(self.job_id, err, None).to_payload()
        while True:
            event: JobEvent | None
            try:
                # The poll, retries included, ends by the deadline: Airflow's backstop would otherwise
                # fire instead of this trigger's timeout event.
                status = await hook.get_task_status(self.job_id, timeout=watch.poll_budget(_now()))
            except HitPawError as err:
                event = watch.fault(err)
            else:
                event = watch.observe(status)
            if event is None:
                pause = watch.pause(_now())
                if pause is not None:
                    await asyncio.sleep(pause)
                    continue
                event = watch.timed_out()
            return event.to_payload()


class SegmentationBatchTrigger(_HitPawTrigger):
    """Wait for many jobs in one trigger, over one shared client, until all have ended or ``end_time``.

    Each open job is polled once per ``poll_interval`` on a schedule of its own (the first polls spread
    over the first interval, at most ``max_in_flight`` at a time), so HitPaw sees no bursts and one job
    whose polls hang delays nobody else. Every poll is bounded by the time left to ``end_time``.

    The event is a :class:`~airflow_provider_hitpaw._events.BatchEvent`'s payload: small for thousands of
    jobs, because the waiting task fetches the result URLs of the completed jobs itself. Jobs whose poll
    failed for good without HitPaw saying anything of them are in its ``unreadable``, not in ``failed``.
    """

    def __init__(
        self,
        job_ids: list[str],
        hitpaw_conn_id: str,
        poll_interval: float,
        end_time: float,
        max_in_flight: int = 16,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.job_ids = [validate_job_id(job_id) for job_id in job_ids]
        self.hitpaw_conn_id = hitpaw_conn_id
        self.poll_interval = validate_positive_seconds(poll_interval, "poll_interval")
        self.end_time = float(end_time)
        self.max_in_flight = max(1, int(max_in_flight))
        self.not_before = None if not_before is None else float(not_before)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return self._serialized(
            {
                "job_ids": list(self.job_ids),
                "hitpaw_conn_id": self.hitpaw_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_in_flight": self.max_in_flight,
                "not_before": self.not_before,
            }
        )

    async def _wait(self, hook: HitPawAsyncHook) -> dict[str, Any]:
        try:
            # Read the connection once, before the first poll: otherwise the first polls would all wait
            # for it and then go out in the very burst the spacing avoids.
            await hook.prepare()
        except HitPawError as err:
            return BatchEvent(Outcome.ERROR, str(err), error=ErrorInfo.of(err)).to_payload()
        watch = BatchWatch(self.job_ids, self.poll_interval, self.end_time, start=_now())
        progress = _Progress(self.log, watch.total)
        polls: dict[asyncio.Task[TaskStatus | HitPawError], tuple[str, float]] = {}
        try:
            while (event := watch.event(_now())) is None:
                now = _now()
                for job_id in watch.take(now, self.max_in_flight - len(polls)):
                    task = asyncio.ensure_future(self._poll(hook, job_id, self.end_time - now))
                    polls[task] = (job_id, now)
                next_due = watch.next_due()
                wake = (
                    self.end_time
                    if next_due is None or len(polls) >= self.max_in_flight
                    else min(next_due, self.end_time)
                )
                timeout = max(0.0, wake - _now())
                if polls:
                    done, _ = await asyncio.wait(polls, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        job_id, started = polls.pop(task)
                        watch.absorb(job_id, task.result(), started)
                    progress.report(watch.completed, len(watch.failed), len(watch.unreadable))
                else:
                    await asyncio.sleep(timeout)
        finally:
            for task in polls:
                task.cancel()
        progress.report(watch.completed, len(watch.failed), len(watch.unreadable), final=True)
        return event.to_payload()

    @staticmethod
    async def _poll(hook: HitPawAsyncHook, job_id: str, budget: float) -> TaskStatus | HitPawError:
        try:
            return await hook.get_task_status(job_id, timeout=max(1.0, budget))
        except HitPawError as err:
            return err


class _Progress:
    """Progress lines at a readable cadence: every tenth of the batch or every 30 s, not every poll."""

    def __init__(self, log: Any, total: int, every_seconds: float = 30.0) -> None:
        self._log = log
        self._total = total
        self._every = every_seconds
        self._step = max(1, total // 10)
        self._last_time = _monotonic()
        self._last_done = -1

    def report(self, completed: int, failed: int, unreadable: int = 0, *, final: bool = False) -> None:
        """Log progress when enough changed; jobs whose status could not be read count as done here,
        named apart from the failed ones (they have not failed)."""
        done = completed + failed + unreadable
        now = _monotonic()
        if done == self._last_done:
            return  # nothing new: the last line still holds (also at the end)
        if final or done - max(0, self._last_done) >= self._step or now - self._last_time >= self._every:
            if unreadable:
                self._log.info(
                    "%d/%d completed, %d failed, %d unreadable", completed, self._total, failed, unreadable
                )
            else:
                self._log.info("%d/%d completed, %d failed", completed, self._total, failed)
            self._last_done, self._last_time = done, now
