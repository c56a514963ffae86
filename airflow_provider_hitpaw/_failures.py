"""How a HitPaw error fails an Airflow task: with retries when trying again can help, without otherwise."""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hitpaw.exceptions import HitPawError, HitPawJobFailedError, HitPawTimeoutError


def fail_without_retry(err: HitPawError | str) -> AirflowFailException:
    """The task failure for an error that no retry can mend (a bad key, no coins, bad input).

    ``AirflowFailException`` skips the task's remaining retries, which would only spend time (and, for a
    submission, nothing useful).
    """
    failure = AirflowFailException(str(err))
    if isinstance(err, HitPawError):
        failure.__cause__ = err
    return failure


def task_failure(err: HitPawError) -> Exception:
    """Retryable faults stay as they are (Airflow's retries apply); permanent ones skip retries. A job
    that ended in ERROR, or outlived the wait, fails normally: a retry submits it again."""
    if err.retryable or isinstance(err, HitPawJobFailedError | HitPawTimeoutError):
        return err
    return fail_without_retry(err)
