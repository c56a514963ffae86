"""Facts a task keeps across its tries: Airflow 3.3's task state store, where Airflow has one.

The store lives in Airflow's metadata (not on a worker's disk) and outlives retries. Values belong to
one *clearing* of the task: clearing a task raises its ``max_tries``, and a user who clears a task means
to start over, so what the tries before the clearing kept is ignored (the same rule Airflow's own
reschedule sensors follow to find their first start). Older Airflow has no store: there
:func:`recall` finds nothing and :func:`remember` says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context


def recall(context: Context, key: str) -> Any:
    """A value an earlier try of this clearing of the task remembered, or None."""
    store = _state_store(context)
    if store is None:
        return None
    kept = store.get(key)
    if not isinstance(kept, dict) or kept.get("max_tries") != _max_tries(context):
        return None
    return kept.get("value")


def can_remember(context: Context) -> bool:
    """Whether this Airflow keeps values across tries."""
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


def first_try_of_clearing(context: Context, retries: int) -> bool:
    """Whether this try is the first since the task was last cleared (or first run).

    Airflow gives a task instance ``retries`` more tries than it has had whenever it is cleared, so the
    first try of a clearing is number ``max_tries - retries + 1``. Unknown counts count as a first try.
    """
    ti = context.get("ti")
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    if not isinstance(try_number, int) or not isinstance(max_tries, int):
        return True
    return try_number <= max_tries - retries + 1


def retry_without_memory(context: Context, retries: int) -> bool:
    """Whether this is a retry on an Airflow that kept nothing of the earlier tries (before 3.3): what
    the store would have carried (the job paid for, the first start) is then unknown to it."""
    return not can_remember(context) and not first_try_of_clearing(context, retries)
