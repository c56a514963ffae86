"""The emulator's data and the rules it follows: coins, keys, jobs, uploads, request counters.

Nothing here speaks HTTP; the handlers in :mod:`.api`, :mod:`.oss` and :mod:`.control` read and change this
state, always from the emulator's event loop (so nothing needs a lock). Time comes from an injectable clock,
so a test can move it forward by days without sleeping.

Choices where HitPaw's documentation is silent:

* Coins are charged at submission, also for jobs that end in ``ERROR``; nothing is refunded.
* A job is ``CONVERTING`` for ``job_seconds`` after submission *and* until its processing is done; its
  ``finished_at`` is the later of the two, and the result TTL (8 days) runs from there. ``ERROR`` jobs
  expire too.
* Uploaded objects are kept 7 days; an expired pre-signed URL is forgotten unless its object was stored.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_hitpaw.emulator.imaging import SegmentationResult

#: What one segmentation costs (hitpaw-api.md section 1).
JOB_COST: Final = 20
#: How long a finished job and its files are kept (section 2: 8 days; one HitPaw page says 7).
DEFAULT_RESULT_TTL: Final = 8 * 24 * 3600.0
#: How long an uploaded source file is kept (section 4).
UPLOAD_TTL: Final = 7 * 24 * 3600.0
#: Key states that can be registered; "invalid" removes a key (it then gets 110400000).
KEY_STATES: Final = frozenset({"valid", "expired", "no_access", "invalid"})
_SETTINGS: Final = frozenset({"job_seconds", "coins", "result_ttl", "force_error"})


@dataclass
class Job:
    """One segmentation job. Its status is derived from the clock, so nothing has to tick."""

    job_id: str
    file_url: str
    submitted_at: float
    ready_at: float
    processed_at: float | None = None
    result: SegmentationResult | None = None
    error: str | None = None
    force_error: bool = False

    def status(self, now: float) -> str:
        """CONVERTING until both the configured duration is over and the processing is done."""
        if self.processed_at is None or now < self.ready_at:
            return "CONVERTING"
        return "COMPLETED" if self.result is not None and not self.force_error else "ERROR"

    @property
    def finished_at(self) -> float | None:
        """When the job left CONVERTING (it may lie in the future while the timer runs)."""
        return None if self.processed_at is None else max(self.ready_at, self.processed_at)


@dataclass
class StoredObject:
    """A file PUT through a pre-signed URL."""

    content_type: str
    data: bytes
    stored_at: float


@dataclass
class Presign:
    """What a pre-signed upload URL allows: one key, one content type, until ``expire_at``."""

    content_type: str
    expire_at: int


class EmulatorState:
    """Everything the emulated account holds, and the rules that change it.

    :meth:`reset` brings it back to the values it was created with.
    """

    def __init__(
        self,
        *,
        api_key: str,
        coins: int,
        job_seconds: float,
        result_ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._initial = (api_key, coins, job_seconds, result_ttl)
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Back to the start-up values: one valid key, the starting coins, no jobs, uploads or counts."""
        api_key, coins, job_seconds, result_ttl = self._initial
        self.coins = coins
        self.job_seconds = job_seconds
        self.result_ttl = result_ttl
        self.force_error = False
        self.keys: dict[str, str] = {api_key: "valid"}
        self.jobs: dict[str, Job] = {}
        self.objects: dict[str, StoredObject] = {}
        self.presigns: dict[str, Presign] = {}
        self.request_counts: dict[str, int] = {}

    def now(self) -> float:
        """The emulator's clock."""
        return self.clock()

    def count_request(self, route: str) -> None:
        """One more request seen on ``route`` (its canonical path)."""
        self.request_counts[route] = self.request_counts.get(route, 0) + 1

    def key_state(self, key: str) -> str | None:
        """``valid``, ``expired``, ``no_access``, or None for a key that is not registered."""
        return self.keys.get(key) if key else None

    def sweep(self) -> None:
        """Forget jobs whose results outlived the TTL, and uploads older than 7 days."""
        now = self.now()
        for job_id, job in list(self.jobs.items()):
            finished = job.finished_at
            if finished is not None and now >= finished and now - finished >= self.result_ttl:
                del self.jobs[job_id]
        for key, obj in list(self.objects.items()):
            if now - obj.stored_at >= UPLOAD_TTL:
                del self.objects[key]
        for key, presign in list(self.presigns.items()):
            if now > presign.expire_at and key not in self.objects:
                del self.presigns[key]

    def create_job(self, file_url: str) -> Job | None:
        """Charge :data:`JOB_COST` and register a new CONVERTING job; None if the coins are not enough."""
        if self.coins < JOB_COST:
            return None
        self.coins -= JOB_COST
        now = self.now()
        job = Job(str(uuid.uuid4()), file_url, now, now + self.job_seconds, force_error=self.force_error)
        self.jobs[job.job_id] = job
        return job

    def set_key(self, key: str, state: str) -> None:
        """Register ``key`` as valid, expired or no_access, or remove it with "invalid"."""
        if state not in KEY_STATES:
            raise ValueError(f"key state must be one of {sorted(KEY_STATES)}")
        if not key:
            raise ValueError("key must be a non-empty string")
        if state == "invalid":
            self.keys.pop(key, None)
        else:
            self.keys[key] = state

    def configure(self, **settings: Any) -> None:
        """Change job_seconds, coins, result_ttl or force_error (new jobs end ERROR) while running."""
        unknown = set(settings) - _SETTINGS
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name in ("job_seconds", "result_ttl"):
            if name in settings:
                value = settings[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name} must be a number >= 0")
                setattr(self, name, float(value))
        if "coins" in settings:
            coins = settings["coins"]
            if isinstance(coins, bool) or not isinstance(coins, int) or coins < 0:
                raise ValueError("coins must be an integer >= 0")
            self.coins = coins
        if "force_error" in settings:
            if not isinstance(settings["force_error"], bool):
                raise ValueError("force_error must be true or false")
            self.force_error = settings["force_error"]

    def expire_job(self, job_id: str) -> bool:
        """Make a job and its files disappear now, as if its TTL were over."""
        return self.jobs.pop(job_id, None) is not None

    def fail_job(self, job_id: str) -> bool:
        """Make a job end in ERROR (when its time is up), whatever its image."""
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job.force_error = True
        return True

    def finish_job(self, job_id: str) -> bool:
        """End a job's timer now: it leaves CONVERTING as soon as its processing is done.

        Lets a test hold jobs open for as long as a scenario needs, then end them without waiting out a
        duration guessed in advance.
        """
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job.ready_at = min(job.ready_at, self.now())
        return True

    def job_snapshots(self) -> list[dict[str, Any]]:
        """The jobs as JSON-ready data (after a sweep)."""
        self.sweep()
        now = self.now()
        return [
            {
                "job_id": job.job_id,
                "status": job.status(now),
                "file_url": job.file_url,
                "submitted_at": job.submitted_at,
                "finished_at": job.finished_at if job.status(now) != "CONVERTING" else None,
                "error": job.error,
            }
            for job in self.jobs.values()
        ]

    def settings(self) -> dict[str, Any]:
        """The settings :meth:`configure` can change (coins aside)."""
        return {
            "job_seconds": self.job_seconds,
            "result_ttl": self.result_ttl,
            "force_error": self.force_error,
        }
