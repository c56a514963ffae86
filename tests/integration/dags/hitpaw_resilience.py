"""DAGs for the resilience tests on real Airflow components (tests/integration/test_resilience_components.py).

* ``hitpaw_resilience_triggerer``: deferred sensors that outlive a killed triggerer; one of them waits for a
  job that never ends, with a 60 s timeout.
* ``hitpaw_resilience_crash``: the worker dies (``os._exit``) right after the first try submitted its
  image; the retry must not submit it again. ``hitpaw_resilience_crash_forgetful`` is the same crash with
  the task state store hidden from the operator: the control case, which pays twice.
* ``hitpaw_resilience_audit``: an end-to-end run (deferrable operator, submit then sensor) plus a task
  that deliberately logs the API key, which Airflow must mask.
* ``hitpaw_resilience_errors``: tasks that fail with HitPaw errors (no coins, an unknown job, a job lost
  while its trigger waits), whose logs must carry HitPaw's code but not the key.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor

if TYPE_CHECKING:
    from airflow_provider_hitpaw._api import TaskStatus
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

log = logging.getLogger(__name__)

#: What the crashing operator logs just before it dies; the test looks for it in try 1's log.
CRASH_MARKER = "SIMULATED WORKER CRASH after submitting"
#: What the audit task logs, followed by the API key.
LEAK_MARKER = "AUDIT deliberately logging the API key:"

START = datetime(2026, 1, 1)


class CrashAfterSubmitting(SegmentImageOperator):
    """The real submission, then the worker process dies on the spot (try 1 only).

    ``os._exit`` skips every ``except``, ``finally`` and exit handler: to Airflow this is a worker that
    vanished right after HitPaw accepted the job.
    """

    def _submit_or_reattach(
        self, hook: HitPawHook, file_url: str | None, source: Any, fingerprint: str | None, context: Any
    ) -> tuple[dict[str, Any], TaskStatus | None]:
        submission, status = super()._submit_or_reattach(hook, file_url, source, fingerprint, context)
        if context["ti"].try_number == 1:
            self.log.warning("%s: job %s", CRASH_MARKER, submission["job_id"])
            os._exit(1)
        return submission, status


class CrashAfterSubmittingWithoutMemory(CrashAfterSubmitting):
    """The same crash, with the task state store hidden from the operator (what Airflow < 3.3 gives)."""

    def _submit_or_reattach(
        self, hook: HitPawHook, file_url: str | None, source: Any, fingerprint: str | None, context: Any
    ) -> tuple[dict[str, Any], TaskStatus | None]:
        without_store = {name: value for name, value in context.items() if name != "task_state_store"}
        return super()._submit_or_reattach(hook, file_url, source, fingerprint, without_store)


with DAG(
    dag_id="hitpaw_resilience_triggerer",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"job_ids": [], "stuck_job_id": ""},
):

    @task
    def job_ids(params: dict[str, Any] | None = None) -> list[str]:
        return list((params or {})["job_ids"])

    SegmentationSensor.partial(task_id="wait", poll_interval=1, timeout=600).expand(job_id=job_ids())
    SegmentationSensor(task_id="deadline", job_id="{{ params.stuck_job_id }}", poll_interval=1, timeout=60)


for dag_id, operator_class in (
    ("hitpaw_resilience_crash", CrashAfterSubmitting),
    ("hitpaw_resilience_crash_forgetful", CrashAfterSubmittingWithoutMemory),
):
    with DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False, params={"url": ""}):
        operator_class(
            task_id="segment",
            file_url="{{ params.url }}",
            poll_interval=1,
            timeout=300,
            retries=1,
            retry_delay=timedelta(seconds=2),
        )


with DAG(
    dag_id="hitpaw_resilience_audit",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"operator_url": "", "sensor_url": ""},
):

    @task
    def log_the_key() -> None:
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

        key = HitPawHook().settings.api_key
        log.info("%s %s", LEAK_MARKER, key)
        print(f"{LEAK_MARKER} {key}")

    SegmentImageOperator(
        task_id="segment", file_url="{{ params.operator_url }}", poll_interval=1, timeout=300
    )
    submitted = SegmentImageOperator(
        task_id="submit", file_url="{{ params.sensor_url }}", wait_for_completion=False
    )
    waited = SegmentationSensor(
        task_id="wait",
        job_id="{{ ti.xcom_pull(task_ids='submit')['job_id'] }}",
        poll_interval=1,
        timeout=300,
    )
    submitted >> waited
    log_the_key()


with DAG(
    dag_id="hitpaw_resilience_errors",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"url": "", "unknown_job_id": "", "lost_job_id": ""},
):
    SegmentImageOperator(task_id="no_coins", file_url="{{ params.url }}", retries=0)
    SegmentationSensor(task_id="unknown_job", job_id="{{ params.unknown_job_id }}", timeout=300)
    SegmentationSensor(task_id="lost_job", job_id="{{ params.lost_job_id }}", poll_interval=1, timeout=300)
