"""What the operator and the sensor share on the Airflow side: reading trigger events, failing tasks the
right way, and remembering facts across task tries.

Kept apart from both so that neither decides alone what an event means.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawError,
    HitPawJobFailedError,
    HitPawTimeoutError,
    error_family,
)
from airflow_provider_hitpaw.validation import validate_overwrite

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: The keys of every trigger event, as :class:`~airflow_provider_hitpaw.triggers.hitpaw.SegmentationTrigger`
#: writes them.
EVENT_STATUS_FIELDS: Final = ("job_id", "res_url", "mask_url", "original_url")
_OUTCOMES: Final = frozenset({"success", "error", "timeout"})


def fail_without_retry(err: HitPawError) -> AirflowFailException:
    """The task failure for an error that no retry can mend (a bad key, no coins, bad input).

    ``AirflowFailException`` skips the task's remaining retries, which would only spend time (and, for a
    submission, nothing useful).
    """
    failure = AirflowFailException(str(err))
    failure.__cause__ = err
    return failure


def task_failure(err: HitPawError) -> Exception:
    """Retryable faults stay as they are (Airflow's retries apply); permanent ones skip retries."""
    if err.retryable or isinstance(err, HitPawJobFailedError | HitPawTimeoutError):
        return err
    return fail_without_retry(err)


def status_from_event(event: Any) -> dict[str, Any]:
    """Return the job's status fields from a successful event; raise the event's error otherwise.

    An event that is missing or not ours is an error of its own: guessing a result from it could
    report a segmentation that never happened.
    """
    if not isinstance(event, dict) or event.get("status") not in _OUTCOMES:
        raise AirflowException(f"HitPaw trigger sent no usable event: {event!r}")
    outcome = event["status"]
    message = str(event.get("message") or "")
    if outcome == "success":
        return {**{name: event.get(name) for name in EVENT_STATUS_FIELDS}, "status": event.get("job_status")}
    if outcome == "timeout":
        raise HitPawTimeoutError(message)
    if event.get("job_status") == _api.JobStatus.ERROR:
        raise HitPawJobFailedError(message)
    raise error_from_event(event, message)


def error_from_event(event: dict[str, Any], message: str) -> HitPawError:
    """The error an event reports, of the same family the trigger met (so retryable or not, alike).

    Events name the family; one without a name (older triggers) is mapped from HitPaw's code.
    """
    family = error_family(event.get("error_type"))
    code, http_status = event.get("code"), event.get("http_status")
    if family is None:
        return _api.error_for_code(code, http_status, message)
    if family is HitPawConfigurationError:
        return HitPawError(message)  # the message names the field already; permanent all the same
    return family(message, code=code, http_status=http_status)


def recall(context: Context, key: str) -> Any:
    """A value an earlier try of this task instance remembered, or None.

    Backed by Airflow 3.3's ``task_state_store``, which lives in Airflow's metadata (not on a worker's
    disk) and outlives retries. Older Airflow has no such store: there this returns None.

    Values belong to one *clearing* of the task: clearing a task raises its ``max_tries``, and a user who
    clears a task means to start over, so what the tries before the clearing remembered is ignored (the
    same rule Airflow's own reschedule sensors follow to find their first start).
    """
    store = _state_store(context)
    if store is None:
        return None
    kept = store.get(key)
    if not isinstance(kept, dict) or kept.get("max_tries") != _max_tries(context):
        return None
    return kept.get("value")


def can_remember(context: Context) -> bool:
    """Whether this Airflow keeps values across tries (3.3's task state store)."""
    return _state_store(context) is not None


def remember(context: Context, key: str, value: Any) -> bool:
    """Keep ``value`` for later tries of this task instance; False where Airflow cannot."""
    store = _state_store(context)
    if store is None:
        return False
    store.set(key, {"value": value, "max_tries": _max_tries(context)})
    return True


def _max_tries(context: Context) -> int | None:
    max_tries = getattr(context.get("ti"), "max_tries", None)
    return max_tries if isinstance(max_tries, int) else None


def _state_store(context: Context) -> Any:
    try:
        return context.get("task_state_store")  # type: ignore[attr-defined]
    except Exception:
        return None


#: How long after a trigger's own deadline Airflow gives up on the trigger: a triggerer that is down at
#: the deadline cannot send the timeout event itself, so Airflow's backstop must come, but after it.
DEFERRAL_GRACE: Final = timedelta(seconds=60)


def deferral_timeout(end_time: float) -> timedelta:
    """``defer(timeout=...)`` for a trigger whose own deadline is ``end_time`` (a Unix time)."""
    return timedelta(seconds=max(0.0, end_time - time.time())) + DEFERRAL_GRACE


def try_started_at(context: Context) -> float:
    """When the current try of the task started, as a Unix time (now, if Airflow does not say)."""
    start = getattr(context.get("ti"), "start_date", None)
    return start.timestamp() if start is not None else time.time()


@dataclass(frozen=True)
class ResultOutput:
    """Where a task keeps its results, and what it shows of them: the copies, the links, the asset.

    Shared by the operator and the sensor, which both end with a completed job on a worker.
    """

    path: Any
    conn_id: str | None
    overwrite: str

    @classmethod
    def checked(cls, path: Any, conn_id: str | None, overwrite: str, waits: bool) -> ResultOutput:
        validate_overwrite(overwrite)
        if path is not None and not waits:
            raise HitPawConfigurationError(
                "output_path", "results can only be kept when the task waits for them"
            )
        return cls(path=path, conn_id=conn_id, overwrite=overwrite)

    def asset(self) -> Any:
        """The Asset (Dataset on Airflow 2) of the output folder, for ``outlets``."""
        from airflow.providers.common.compat.sdk import Asset

        if self.path is None or "{{" in str(self.path):
            raise HitPawConfigurationError("emit_asset", "needs a fixed output_path (not a template)")
        from airflow_provider_hitpaw import storage

        # The same URI the copies are written under, so that a DAG scheduled on it sees them.
        return Asset(uri=storage.storage_uri(storage.as_storage_path(self.path, self.conn_id)))

    def persist(self, context: Context, result: dict[str, Any], source: str) -> dict[str, Any]:
        """Copy the results when asked to, push the links' XCom, return the result with the paths."""
        from airflow_provider_hitpaw.links import LINKS_XCOM_KEY, links_value

        persisted: dict[str, str] | None = None
        if self.path is not None:
            from airflow_provider_hitpaw import storage

            persisted = storage.persist_job_results(
                result, source, self.path, overwrite=self.overwrite, conn_id=self.conn_id
            )
            result = {**result, **persisted}
        ti = context.get("ti")
        if ti is not None and hasattr(ti, "xcom_push"):
            ti.xcom_push(key=LINKS_XCOM_KEY, value=links_value(result, persisted))
        return result


def result_links() -> tuple[Any, ...]:
    """The extra links of the tasks that end with a cut-out: to it and to its mask."""
    from airflow_provider_hitpaw.links import HitPawCutoutLink, HitPawMaskLink

    return (HitPawCutoutLink(), HitPawMaskLink())


def lineage(info: dict[str, Any]) -> Any:
    """OpenLineage facets: the input image in, the persisted files out; None without the provider."""
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    if not info.get("input"):
        return OperatorLineage()
    return OperatorLineage(
        inputs=[Dataset(*_namespace_and_name(info["input"]))],
        outputs=[Dataset(*_namespace_and_name(path)) for path in info.get("outputs", []) if path],
    )


def _namespace_and_name(location: str) -> tuple[str, str]:
    """OpenLineage's naming: ``scheme://authority`` as namespace and the path as name."""
    from urllib.parse import urlsplit

    parts = urlsplit(location if "://" in location else f"file://{location}")
    namespace = f"{parts.scheme}://{parts.netloc}" if parts.netloc else parts.scheme
    return namespace, parts.path or "/"
