"""The rules of waiting for HitPaw jobs, written once for the triggers and for the blocking waits.

:class:`JobWatch` waits for one job (the single trigger, ``HitPawHook.wait_for_completion``);
:class:`BatchWatch` for many (the batch trigger, the batch operator's blocking wait). They decide; the
callers only poll and sleep. No I/O happens here, so both rules are tested without a server or a clock.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_hitpaw._api import JobStatus, says_job_unknown
from airflow_provider_hitpaw._events import BatchEvent, ErrorInfo, JobEvent, Outcome
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawError,
    HitPawInsufficientCoinsError,
    HitPawJobFailedError,
    HitPawTimeoutError,
    HitPawTLSError,
)

if TYPE_CHECKING:
    from airflow_provider_hitpaw._api import TaskStatus

#: A status poll never gets less time than this, even right at the deadline: a poll with no time at all
#: would only turn "still running" into a fault.
MIN_POLL_SECONDS: Final = 1.0


@dataclass
class JobWatch:
    """Waiting for one job until it ends or ``end_time`` (a Unix time) passes.

    Faults that outlast a poll's own retries do not end the wait: until HitPaw says ``ERROR`` the job
    has not failed, and the next poll may get through. Changes of status are logged once, and so is each
    kind of fault, not every poll.
    """

    job_id: str
    end_time: float
    poll_interval: float
    logger: Any
    last_status: str | None = None
    _last_fault: str | None = None

    def poll_budget(self, now: float) -> float:
        """Seconds the next poll may take, retries included: the time left, at least a second."""
        return max(MIN_POLL_SECONDS, self.end_time - now)

    def observe(self, status: TaskStatus) -> JobEvent | None:
        """The event, when this status ends the wait."""
        self._last_fault = None
        if status.status != self.last_status:
            self.logger.info("HitPaw job %r is %s", self.job_id, status.status)
            self.last_status = status.status
        if status.is_completed:
            return JobEvent.completed(status)
        if status.is_failed:
            return JobEvent.job_failed(status)
        return None

    def fault(self, err: HitPawError) -> JobEvent | None:
        """The event, when this fault ends the wait (it cannot pass by itself). A poll that failed is not
        a job that failed: such an event says so (:meth:`JobEvent.unreadable_poll`)."""
        if is_unreadable_poll(err):
            self.logger.warning(
                "Polling HitPaw job %r failed (%s); the job itself has not failed", self.job_id, err
            )
            return JobEvent.unreadable_poll(self.job_id, err, self.last_status)
        if not err.retryable:
            return JobEvent.failed(self.job_id, err, self.last_status)
        if type(err).__name__ != self._last_fault:
            self.logger.warning("Polling HitPaw job %r failed (%s); polling on", self.job_id, err)
            self._last_fault = type(err).__name__
        return None

    def pause(self, now: float) -> float | None:
        """Seconds to wait before the next poll, or None when the deadline has passed."""
        remaining = self.end_time - now
        if remaining <= 0:
            return None
        return min(self.poll_interval, remaining)

    def timed_out(self) -> JobEvent:
        return JobEvent.timed_out(self.job_id, self.last_status)


#: Errors that say nothing about one job but about the account or the connection: a batch stops on them.
BATCH_STOPPING_ERRORS: Final[tuple[type[HitPawError], ...]] = (
    HitPawAuthenticationError,
    HitPawInsufficientCoinsError,
    HitPawConfigurationError,
    HitPawTLSError,
)
_REASON_LIMIT: Final = 200
#: What a wait raises about the job itself, never about a poll.
_JOB_ENDINGS: Final = (HitPawJobFailedError, HitPawTimeoutError)


def is_unreadable_poll(err: HitPawError) -> bool:
    """Whether a status poll's failure, which no retry of the poll mends, says nothing of the job (a
    gateway's bare 404, an answer over the size cap, an undocumented code): not HitPaw saying it does
    not know the job (it is gone), nor the account or the connection (those stop everything)."""
    return not (
        err.retryable or isinstance(err, (*BATCH_STOPPING_ERRORS, *_JOB_ENDINGS)) or says_job_unknown(err)
    )


@dataclass
class BatchWatch:
    """Waiting for many jobs, each on its own cadence, until all have ended or ``end_time`` passes.

    Every open job is polled once per ``poll_interval``, counted from the start of its previous poll, and
    the first polls are spread over the first interval rather than fired in a burst. Because each job
    keeps its own schedule, one job whose polls hang does not delay anyone else's.

    :meth:`take` hands out the jobs whose poll is due (the caller bounds how many run at once);
    :meth:`absorb` takes each poll's outcome back.

    A poll that fails for good without HitPaw saying the job is unknown (:func:`is_unreadable_poll`) ends
    that job's wait at once, in ``unreadable``, not in ``failed``: the job has not failed, but polling it
    again in this wait would most likely meet the same fault until the deadline.
    """

    job_ids: list[str]
    poll_interval: float
    end_time: float
    start: float
    completed: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    #: The jobs whose status could not be read (job id -> the error's type and text): not failed.
    unreadable: dict[str, str] = field(default_factory=dict)
    #: The error that stops the whole batch, when one came.
    stopped_by: HitPawError | None = None
    _schedule: list[tuple[float, int, str]] = field(default_factory=list, repr=False)
    _ready: deque[str] = field(default_factory=deque, repr=False)
    _open: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        unique = list(dict.fromkeys(self.job_ids))
        self._open = set(unique)
        spacing = self.poll_interval / max(1, len(unique))
        self._schedule = [(self.start + index * spacing, index, job) for index, job in enumerate(unique)]
        heapq.heapify(self._schedule)
        self._order = {job: index for index, job in enumerate(unique)}
        self.total = len(unique)

    @property
    def finished(self) -> bool:
        return not self._open or self.stopped_by is not None

    @property
    def open_jobs(self) -> list[str]:
        return sorted(self._open, key=self._order.__getitem__)

    def take(self, now: float, limit: int) -> list[str]:
        """Up to ``limit`` jobs whose poll is due at ``now``, longest due first."""
        while self._schedule and self._schedule[0][0] <= now:
            self._ready.append(heapq.heappop(self._schedule)[2])
        taken: list[str] = []
        while self._ready and len(taken) < limit:
            taken.append(self._ready.popleft())
        return taken

    def next_due(self) -> float | None:
        """When the next poll is due: now if some wait for a free slot, None if none is scheduled."""
        if self._ready:
            return float("-inf")
        return self._schedule[0][0] if self._schedule else None

    def absorb(self, job_id: str, outcome: TaskStatus | HitPawError | None, started: float) -> None:
        """Take the outcome of one poll of ``job_id`` that started at ``started`` (None: it was cut off)."""
        if job_id not in self._open:
            return
        if isinstance(outcome, BATCH_STOPPING_ERRORS):
            self.stopped_by = outcome
        elif outcome is None or (isinstance(outcome, HitPawError) and outcome.retryable):
            pass  # the poll failed, not the job: poll it again
        elif isinstance(outcome, HitPawError) and is_unreadable_poll(outcome):
            self.unreadable[job_id] = f"{type(outcome).__name__}: {outcome}"[:_REASON_LIMIT]
            self._open.discard(job_id)
            return
        elif isinstance(outcome, HitPawError):
            self._end(job_id, str(outcome)[:_REASON_LIMIT])
            return
        elif outcome.is_completed:
            self.completed += 1
            self._open.discard(job_id)
            return
        elif outcome.is_failed:
            self._end(job_id, f"ended with status {JobStatus.ERROR}")
            return
        heapq.heappush(self._schedule, (started + self.poll_interval, self._order[job_id], job_id))

    def _end(self, job_id: str, reason: str) -> None:
        self.failed[job_id] = reason
        self._open.discard(job_id)

    def event(self, now: float) -> BatchEvent | None:
        """The event, once the batch is over: every job ended, a stopping error came, or time is up."""
        if self.stopped_by is not None:
            stop = self.stopped_by
            return BatchEvent(
                Outcome.ERROR,
                str(stop),
                self.completed,
                dict(self.failed),
                self.open_jobs,
                ErrorInfo.of(stop),
                dict(self.unreadable),
            )
        unreadable = f", {len(self.unreadable)} unreadable" if self.unreadable else ""
        if not self._open:
            message = f"{self.completed} of {self.total} completed, {len(self.failed)} failed{unreadable}"
            return BatchEvent(
                Outcome.SUCCESS, message, self.completed, dict(self.failed), unreadable=dict(self.unreadable)
            )
        if now >= self.end_time:
            message = f"{len(self._open)} of {self.total} jobs were still open at the deadline"
            return BatchEvent(
                Outcome.TIMEOUT,
                message,
                self.completed,
                dict(self.failed),
                self.open_jobs,
                unreadable=dict(self.unreadable),
            )
        return None
