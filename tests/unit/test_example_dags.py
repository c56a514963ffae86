"""The example DAGs load on this Airflow without import errors, and have the shapes the README shows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


@pytest.fixture(scope="module")
def dagbag() -> object:
    kwargs: dict[str, object] = {}
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2, which also loads its own examples unless told not to
        from airflow.models.dagbag import DagBag

        kwargs["include_examples"] = False

    # Airflow puts the DAGs folder on sys.path; the examples share a settings module through it.
    sys.path.insert(0, str(EXAMPLES))
    try:
        return DagBag(dag_folder=str(EXAMPLES), **kwargs)
    finally:
        sys.path.remove(str(EXAMPLES))


def test_no_import_errors(dagbag: object) -> None:
    assert dagbag.import_errors == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("dag_id", "task_ids"),
    [
        ("example_hitpaw_one_task", {"segment_image"}),
        ("example_hitpaw_two_step", {"submit", "wait_for_cutout"}),
        ("example_hitpaw_mapped", {"image_urls", "segment", "save_results"}),
        ("example_hitpaw_batch", {"segment_all"}),
    ],
)
def test_shapes(dagbag: object, dag_id: str, task_ids: set[str]) -> None:
    dag = dagbag.dags[dag_id]  # type: ignore[attr-defined]
    assert set(dag.task_ids) == task_ids
