"""The events a HitPaw trigger fires, as typed objects with their JSON form written beside their reading.

A trigger builds a :class:`JobEvent` or a :class:`BatchEvent` and yields its :meth:`to_payload`; the task
that resumes reads it back with :meth:`from_payload`. Writer and reader live here together, so the two
sides cannot drift apart, and an event that is missing or not ours is refused instead of guessed at.
Events carry the error's family by name, so that the task rebuilds a permanent error as permanent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawError,
    HitPawJobFailedError,
    HitPawResponseError,
    HitPawTimeoutError,
    error_family,
)

if TYPE_CHECKING:
    from airflow_provider_hitpaw._api import TaskStatus


class Outcome(StrEnum):
    """What a waiting task must do next: its payload's ``status``."""

    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class ErrorInfo:
    """An error as it crosses an event: its family's name, HitPaw's code, the HTTP status."""

    error_type: str | None = None
    code: int | None = None
    http_status: int | None = None

    @classmethod
    def of(cls, err: HitPawError) -> ErrorInfo:
        return cls(error_type=type(err).__name__, code=err.code, http_status=err.http_status)

    def to_payload(self) -> dict[str, Any]:
        return {"code": self.code, "http_status": self.http_status, "error_type": self.error_type}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ErrorInfo:
        return cls(
            error_type=payload.get("error_type") if isinstance(payload.get("error_type"), str) else None,
            code=_int_or_none(payload.get("code")),
            http_status=_int_or_none(payload.get("http_status")),
        )

    def rebuild(self, message: str) -> HitPawError:
        """The error of the same family the trigger met (so retryable or not, alike). Events without a
        family name (older triggers) are mapped from HitPaw's code."""
        family = error_family(self.error_type)
        if family is None:
            return _api.error_for_code(self.code, self.http_status, message)
        if family is HitPawConfigurationError:
            return HitPawError(message)  # the message names the field already; permanent all the same
        return family(message, code=self.code, http_status=self.http_status)


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _outcome_of(payload: Any, what: str) -> Outcome:
    if not isinstance(payload, dict):
        raise HitPawResponseError(f"the {what} sent no usable event: {str(payload)[:200]!r}")
    try:
        return Outcome(str(payload.get("status")))
    except ValueError:
        raise HitPawResponseError(f"the {what} sent no usable event: {str(payload)[:200]!r}") from None


@dataclass(frozen=True)
class JobEvent:
    """The one event of :class:`~airflow_provider_hitpaw.triggers.hitpaw.SegmentationTrigger`."""

    outcome: Outcome
    job_id: str
    message: str
    job_status: str | None = None
    res_url: str | None = None
    mask_url: str | None = None
    original_url: str | None = None
    error: ErrorInfo | None = None
    #: When the trigger saw the job end (epoch seconds): the job's end for ``hitpaw.job_duration``, not
    #: the moment the resumed task ran.
    seen_at: float | None = None
    #: True when the wait ended on a status poll no retry of the poll could read (see
    #: :meth:`unreadable_poll`): the job itself has not failed. Payload key ``"unreadable"``, sent only
    #: when True; an event without it (an older trigger) reads as False.
    unreadable: bool = False

    @classmethod
    def completed(cls, status: TaskStatus) -> JobEvent:
        return cls(
            Outcome.SUCCESS,
            status.job_id,
            f"HitPaw job {status.job_id!r} completed",
            status.status,
            status.res_url,
            status.mask_url,
            status.original_url,
            seen_at=time.time(),
        )

    @classmethod
    def job_failed(cls, status: TaskStatus) -> JobEvent:
        return cls(
            Outcome.ERROR,
            status.job_id,
            HitPawJobFailedError.describe(status.job_id),
            status.status,
            original_url=status.original_url,
            seen_at=time.time(),
        )

    @classmethod
    def failed(cls, job_id: str, err: HitPawError, last_status: str | None) -> JobEvent:
        return cls(Outcome.ERROR, job_id, str(err), last_status, error=ErrorInfo.of(err))

    @classmethod
    def unreadable_poll(cls, job_id: str, err: HitPawError, last_status: str | None) -> JobEvent:
        """A poll whose failure says nothing of the job (a gateway's bare 404, an answer over the cap):
        the real error crosses, with words that the job has not failed and still holds its coins."""
        seen = f"last seen {last_status}" if last_status else "not yet seen"
        message = (
            f"polling HitPaw job {job_id!r} failed ({type(err).__name__}: {err.detail}); the job itself "
            f"has not failed ({seen}): it is paid for and may still complete"
        )
        return cls(Outcome.ERROR, job_id, message, last_status, error=ErrorInfo.of(err), unreadable=True)

    @classmethod
    def timed_out(cls, job_id: str, last_status: str | None) -> JobEvent:
        return cls(
            Outcome.TIMEOUT,
            job_id,
            f"HitPaw job {job_id!r} was still {last_status or 'not known to be running'} at the deadline",
            last_status,
        )

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "status": str(self.outcome),
            "job_id": self.job_id,
            "message": self.message,
            "job_status": self.job_status,
            "res_url": self.res_url,
            "mask_url": self.mask_url,
            # HitPaw's echo of the submitted URL: its credentials must not reach the metadata database.
            "original_url": _api.url_without_credentials(self.original_url) if self.original_url else None,
        }
        if self.seen_at is not None:
            payload["seen_at"] = self.seen_at
        if self.error is not None:
            payload.update(self.error.to_payload())
        if self.unreadable:
            payload["unreadable"] = True
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> JobEvent:
        outcome = _outcome_of(payload, "HitPaw trigger")
        job_id = payload.get("job_id")
        if not _api.is_usable_job_id(job_id):
            raise HitPawResponseError(
                f"the HitPaw trigger's event names no usable job: {str(payload)[:200]!r}"
            )

        def text(name: str) -> str | None:
            value = payload.get(name)
            return value if isinstance(value, str) and value else None

        has_error = any(payload.get(name) is not None for name in ("error_type", "code", "http_status"))
        return cls(
            outcome,
            job_id,
            str(payload.get("message") or ""),
            text("job_status"),
            text("res_url"),
            text("mask_url"),
            text("original_url"),
            ErrorInfo.from_payload(payload) if has_error else None,
            _float_or_none(payload.get("seen_at")),
            payload.get("unreadable") is True and has_error,
        )

    def status_fields(self) -> dict[str, Any]:
        """The job's status as the task returns it (XCom)."""
        return {
            "job_id": self.job_id,
            "res_url": self.res_url,
            "mask_url": self.mask_url,
            "original_url": _api.url_without_credentials(self.original_url) if self.original_url else None,
            "status": self.job_status,
        }

    def raise_unless_completed(self) -> dict[str, Any]:
        """The job's status fields when it completed; the error the event reports otherwise."""
        if self.outcome is Outcome.SUCCESS:
            return self.status_fields()
        raise self.failure()

    def failure(self) -> HitPawError:
        """The error an event that is no success reports: of the family the trigger met, so that a
        permanent error stays permanent (an unreadable poll keeps its real family and code)."""
        if self.outcome is Outcome.TIMEOUT:
            return HitPawTimeoutError(self.message)
        if self.job_status == _api.JobStatus.ERROR and self.error is None:
            return HitPawJobFailedError.for_job(self.job_id)
        return (self.error or ErrorInfo()).rebuild(self.message)


@dataclass(frozen=True)
class BatchEvent:
    """The one event of :class:`~airflow_provider_hitpaw.triggers.hitpaw.SegmentationBatchTrigger`.

    It stays small for thousands of jobs: a count of the completed ones, and only the failed ones (with
    a short reason), the unreadable ones and, at a deadline, the ones still open. The task fetches the
    result URLs itself.

    ``failed`` holds the jobs that ended: HitPaw said ``ERROR``, or said it does not know the job.
    ``unreadable`` (payload key ``"unreadable"``, ``{job_id: reason}``) holds the jobs whose status poll
    failed in a way no retry of the poll mends and that says nothing of the job (a gateway's bare 404, an
    answer over the size cap): they have not failed, and may still complete. An event without the key (an
    older trigger) reads as none.
    """

    outcome: Outcome
    message: str
    completed: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    error: ErrorInfo | None = None
    unreadable: dict[str, str] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        error = self.error or ErrorInfo()
        return {
            "status": str(self.outcome),
            "message": self.message,
            "completed": self.completed,
            "failed": dict(self.failed),
            "unreadable": dict(self.unreadable),
            "pending": list(self.pending) if self.outcome is not Outcome.SUCCESS else [],
            **error.to_payload(),
        }

    @classmethod
    def from_payload(cls, payload: Any) -> BatchEvent:
        outcome = _outcome_of(payload, "HitPaw batch trigger")
        failed = payload.get("failed") or {}
        unreadable = payload.get("unreadable") or {}
        pending = payload.get("pending") or []
        completed = payload.get("completed") or 0
        if (
            not isinstance(failed, dict)
            or not isinstance(unreadable, dict)
            or not isinstance(pending, list)
            or not isinstance(completed, int)
        ):
            raise HitPawResponseError(
                f"the HitPaw batch trigger's event is malformed: {str(payload)[:200]!r}"
            )
        has_error = payload.get("error_type") is not None or payload.get("code") is not None
        return cls(
            outcome,
            str(payload.get("message") or ""),
            completed,
            {str(k): str(v) for k, v in failed.items()},
            [str(job) for job in pending],
            ErrorInfo.from_payload(payload) if has_error else None,
            {str(k): str(v) for k, v in unreadable.items()},
        )

    def raise_if_stopped(self) -> None:
        """Raise the error that stopped the whole batch, if one did."""
        if self.outcome is Outcome.ERROR:
            raise (self.error or ErrorInfo()).rebuild(self.message)
