"""Jobs and coins in Airflow's own metrics (StatsD or OpenTelemetry, whichever the deployment set up).

Names, under Airflow's prefix (``[metrics] statsd_prefix``, ``airflow`` by default):

* ``hitpaw.jobs_submitted``: jobs HitPaw created (one per paid submission);
* ``hitpaw.coins_consumed``: the coins HitPaw reported for them (nothing when it did not say);
* ``hitpaw.jobs_reused``: inputs answered from results kept by an earlier run (no job, no coin);
* ``hitpaw.jobs_completed`` and ``hitpaw.jobs_failed``: jobs that ended, as the task that ends with them
  learned it;
* ``hitpaw.job_duration``: from a job's submission to its end, for the jobs this provider submitted.

Each is counted once per job. A submission is counted where its answer arrives, which happens once. An
end is counted by the task that finishes with the job, after its results are kept (so a try that fails
after the job ended, and its retry, count it once between them), and where Airflow keeps a task state
store (3.3) the task remembers which ends it counted, so that a retry that waits for the same jobs
again does not count them twice.

A metric that cannot be sent never fails a task: metrics are observations, not results.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

log = logging.getLogger(__name__)

SUBMITTED: Final = "hitpaw.jobs_submitted"
COMPLETED: Final = "hitpaw.jobs_completed"
FAILED: Final = "hitpaw.jobs_failed"
REUSED: Final = "hitpaw.jobs_reused"
SUSPECTS: Final = "hitpaw.cutouts_suspect"
COINS: Final = "hitpaw.coins_consumed"
DURATION: Final = "hitpaw.job_duration"
#: The job whose end a single-job task counted (3.3's task state store), so that a retry does not recount.
_COUNTED_END_KEY: Final = "hitpaw_counted_end"


def _stats() -> Any:
    from airflow.providers.common.compat.sdk import Stats

    return Stats


def _send(what: str, call: Any) -> None:
    try:
        call(_stats())
    except Exception:  # a metrics backend that is down or misconfigured must not fail a paid job
        log.debug("Could not send the metric %s", what, exc_info=True)


def count_submitted(coins: int | None, jobs: int = 1) -> None:
    """Jobs HitPaw created, and the coins it said they cost."""
    if jobs <= 0:
        return
    _send(SUBMITTED, lambda stats: stats.incr(SUBMITTED, jobs))
    if coins:
        _send(COINS, lambda stats: stats.incr(COINS, coins))


def count_reused(inputs: int = 1) -> None:
    """Inputs answered from kept results: no job, no coin."""
    if inputs > 0:
        _send(REUSED, lambda stats: stats.incr(REUSED, inputs))


def count_suspects(results: int = 1) -> None:
    """Cut-outs whose mask looks wrong (flagged, or failed under ``suspects="fail"``)."""
    if results > 0:
        _send(SUSPECTS, lambda stats: stats.incr(SUSPECTS, results))


def count_ended(completed: int = 0, failed: int = 0, durations: list[float] | None = None) -> None:
    """Jobs that ended, and (where the submission time is known) how long each took."""
    if completed > 0:
        _send(COMPLETED, lambda stats: stats.incr(COMPLETED, completed))
    if failed > 0:
        _send(FAILED, lambda stats: stats.incr(FAILED, failed))
    for seconds in durations or []:
        if seconds >= 0:
            _send(DURATION, lambda stats, span=timedelta(seconds=seconds): stats.timing(DURATION, span))


def seconds_since(started_at: Any, ended_at: float | None = None) -> float | None:
    """Seconds from an epoch timestamp (carried in XCom) to ``ended_at`` (now by default)."""
    if isinstance(started_at, bool) or not isinstance(started_at, int | float):
        return None
    return (time.time() if ended_at is None else ended_at) - float(started_at)


def count_end_once(context: Context, job_id: str, completed: bool, duration: float | None = None) -> None:
    """A single-job task's end of ``job_id``, unless a try before this one counted it (3.3 remembers)."""
    from airflow_provider_hitpaw import _state_store

    try:
        if _state_store.recall(context, _COUNTED_END_KEY) == job_id:
            return
    except Exception:  # the store is Airflow's: counting twice is better than failing a finished job
        log.warning("Airflow's task state store could not be read; the job's end may be counted twice")
    count_ended(
        completed=int(completed),
        failed=int(not completed),
        durations=[duration] if duration is not None else None,
    )
    try:
        _state_store.remember(context, _COUNTED_END_KEY, job_id)
    except Exception:
        log.warning("Airflow's task state store could not record that the job's end was counted")
