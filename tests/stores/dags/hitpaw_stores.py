"""Whatever ``tests/stores`` asks for, against the object stores: the tasks come from a JSON spec in
``HITPAW_STORES_SPEC`` (read when the DAG is parsed), so that one ``airflow dags test`` run covers every
store at once. Each path is an ``ObjectStoragePath`` with its own connection (``conn_id``).

Spec: ``{"dag_id", "report", "tasks": [...]}``; a task is one of

* ``{"kind": "batch", "task_id", "sources": [path, ...], "output": path, "overwrite"}``
* ``{"kind": "single", "task_id", "source": path, "output": path, "overwrite"}``
* ``{"kind": "submit_only", "task_id", "file_url"}``

where a path is ``{"uri", "conn_id"}``. A last task (run whatever the others did) writes to ``report``,
per task: its state, what it returned, and what its extra links read (``hitpaw_links``; not read with
``"read_links": false``, so that the only reads of it are the links' own).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import DAG, BaseOperator, ObjectStoragePath, task

from airflow_provider_hitpaw.links import LINKS_XCOM_KEY
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator, SegmentImageOperator

SPEC: dict[str, Any] = json.loads(os.environ.get("HITPAW_STORES_SPEC") or '{"tasks": []}')


def storage_path(given: dict[str, str]) -> ObjectStoragePath:
    return ObjectStoragePath(given["uri"], conn_id=given.get("conn_id"))


with DAG(
    dag_id=SPEC.get("dag_id", "hitpaw_stores"),
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
):
    operators: list[BaseOperator] = []
    for spec in SPEC["tasks"]:
        if spec["kind"] == "batch":
            operators.append(
                SegmentImageBatchOperator(
                    task_id=spec["task_id"],
                    source_paths=[storage_path(source) for source in spec["sources"]],
                    output_path=storage_path(spec["output"]),
                    overwrite=spec.get("overwrite", "skip"),
                    poll_interval=1,
                    max_in_flight=4,
                )
            )
        elif spec["kind"] == "single":
            operators.append(
                SegmentImageOperator(
                    task_id=spec["task_id"],
                    source_path=storage_path(spec["source"]),
                    output_path=storage_path(spec["output"]),
                    overwrite=spec.get("overwrite", "skip"),
                    poll_interval=1,
                )
            )
        else:
            operators.append(
                SegmentImageOperator(
                    task_id=spec["task_id"], file_url=spec["file_url"], wait_for_completion=False
                )
            )

    @task(trigger_rule="all_done")
    def report(**context: Any) -> None:
        ti = context["ti"]
        states: dict[str, Any] = {}
        try:
            found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
            states = dict(found.get(ti.run_id, {}))
        except Exception as err:  # a line without the call: the states stay unknown
            states = {"error": repr(err)}
        tasks = {
            spec["task_id"]: {
                "state": states.get(spec["task_id"]),
                "result": ti.xcom_pull(task_ids=spec["task_id"]),
                "links": (
                    ti.xcom_pull(task_ids=spec["task_id"], key=LINKS_XCOM_KEY)
                    if SPEC.get("read_links", True)
                    else None
                ),
            }
            for spec in SPEC["tasks"]
        }
        Path(SPEC["report"]).write_text(json.dumps(tasks, ensure_ascii=False, default=str))

    done = report()
    for operator in operators:
        operator >> done
