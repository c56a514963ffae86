"""When a deferred wait ends: the trigger's own deadline, and Airflow's backstop after it."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

#: How long after a trigger's own deadline Airflow gives up on the trigger: a triggerer that is down at
#: the deadline cannot send the timeout event itself, so Airflow's backstop must come, but after it.
DEFERRAL_GRACE: Final = timedelta(seconds=60)


#: Seconds after a deferral before its trigger may fire. Airflow 3 can fail a resumed try when the event
#: comes within seconds of the deferral (apache/airflow#66374, #71580, #72716: the executor's "success" of
#: the try that deferred is processed after the trigger fired). Holding the first event past that window
#: costs a fast job these seconds and no slot: the wait is in the triggerer. Measured on Airflow 3.2 and
#: 3.3 with their defaults: see benchmarks/deferral_race.py and benchmarks/README.md.
EVENT_HOLD_SECONDS: Final = 10.0


def event_not_before(hold: float | None) -> float | None:
    """The ``not_before`` of a trigger deferred now, holding its event ``hold`` seconds (0: no hold;
    None: the deployment's ``[hitpaw] min_deferred_seconds``, else :data:`EVENT_HOLD_SECONDS`)."""
    seconds = configured_event_hold() if hold is None else hold
    return time.time() + seconds if seconds > 0 else None


def configured_event_hold() -> float:
    """``[hitpaw] min_deferred_seconds`` of Airflow's configuration (environment:
    ``AIRFLOW__HITPAW__MIN_DEFERRED_SECONDS``), read when a task defers; :data:`EVENT_HOLD_SECONDS` where it
    is not set or not a number from 0 to 50."""
    from airflow.providers.common.compat.sdk import conf

    try:
        value = conf.getfloat("hitpaw", "min_deferred_seconds", fallback=EVENT_HOLD_SECONDS)
    except Exception:  # a misspelt value must not fail a task that already paid; the default holds
        return EVENT_HOLD_SECONDS
    return value if 0 <= value <= 50 else EVENT_HOLD_SECONDS


def deferral_timeout(end_time: float) -> timedelta:
    """``defer(timeout=...)`` for a trigger whose own deadline is ``end_time`` (a Unix time)."""
    return timedelta(seconds=max(0.0, end_time - time.time())) + DEFERRAL_GRACE


def try_started_at(context: Context) -> float:
    """When the current try of the task started, as a Unix time (now, if Airflow does not say)."""
    start = getattr(context.get("ti"), "start_date", None)
    return start.timestamp() if start is not None else time.time()


#: What Airflow's ``resume_execution`` is called with when it ends a deferral itself (a deferral timeout,
#: a trigger that failed): the task is resumed only to fail.
FAIL_METHOD: Final = "__fail__"


def deferral_failure(err: BaseException, what: str) -> str:
    """The message for a deferral Airflow ended itself, saying what had been waited for and what to check.

    The generic ``TaskDeferralTimeout`` says neither which job (already paid for) was left behind nor
    that the likeliest cause is a triggerer that is not running.
    """
    if type(err).__name__ == "TaskDeferralTimeout" or "timeout" in str(err).lower():
        return (
            f"{what}: no event came from its trigger by the deferral's deadline. HitPaw may still be "
            "working on it, or no triggerer is running: check that `airflow triggerer` is up (its "
            "heartbeat is in the UI's health view, or `airflow jobs check --job-type TriggererJob`)"
        )
    return f"{what}: its trigger failed ({err}); the triggerer's log has the traceback"
