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


def deferral_timeout(end_time: float) -> timedelta:
    """``defer(timeout=...)`` for a trigger whose own deadline is ``end_time`` (a Unix time)."""
    return timedelta(seconds=max(0.0, end_time - time.time())) + DEFERRAL_GRACE


def try_started_at(context: Context) -> float:
    """When the current try of the task started, as a Unix time (now, if Airflow does not say)."""
    start = getattr(context.get("ti"), "start_date", None)
    return start.timestamp() if start is not None else time.time()
