"""The example DAGs load on this Airflow without import errors, and have the shapes the README shows."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[3] / "airflow_provider_hitpaw" / "example_dags"


@pytest.fixture(scope="module")
def dagbag() -> object:
    kwargs: dict[str, object] = {}
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2, which also loads its own examples unless told not to
        from airflow.models.dagbag import DagBag

        kwargs["include_examples"] = False

    # Not on sys.path on purpose: the examples import their settings from the package, so they load on
    # every line (Airflow 3.0's `dags test` does not put the DAGs folder on sys.path).
    return DagBag(dag_folder=str(EXAMPLES), **kwargs)


def test_no_import_errors(dagbag: object) -> None:
    assert dagbag.import_errors == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("dag_id", "task_ids"),
    [
        ("example_hitpaw_one_task", {"segment_image"}),
        ("example_hitpaw_two_step", {"submit", "wait_for_cutout"}),
        ("example_hitpaw_mapped", {"image_urls", "segment", "report"}),
        ("example_hitpaw_batch", {"segment_all"}),
        ("example_hitpaw_folder", {"images_in_folder", "segment"}),
        ("example_hitpaw_catalogue", {"catalogue_photos", "segment_catalogue", "review", "publish"}),
    ],
)
def test_shapes(dagbag: object, dag_id: str, task_ids: set[str]) -> None:
    dag = dagbag.dags[dag_id]  # type: ignore[attr-defined]
    gate = {"any_suspects", "approve_suspects", "publish_suspects"}  # Airflow 3.1 and later
    assert set(dag.task_ids) - gate == task_ids


def test_the_catalogue_asks_a_person_to_approve_suspects_from_airflow_3_1(dagbag: object) -> None:
    """Airflow 3.1 brought human-in-the-loop operators; before it, the suspects stay unpublished and the
    report names them."""
    from importlib.metadata import version

    dag = dagbag.dags["example_hitpaw_catalogue"]  # type: ignore[attr-defined]
    gate = {"any_suspects", "approve_suspects", "publish_suspects"}
    line = tuple(int(part) for part in version("apache-airflow").split(".")[:2])
    if line >= (3, 1):
        assert gate <= set(dag.task_ids)
        assert dag.get_task("approve_suspects").upstream_task_ids == {"any_suspects"}
        assert type(dag.get_task("approve_suspects")).__name__ == "ApprovalOperator"
    else:
        assert not gate & set(dag.task_ids)


def test_only_dags_are_parsed(dagbag: object) -> None:
    """The settings module and the package marker are no DAG files (.airflowignore)."""
    assert sorted(dagbag.dags) == [  # type: ignore[attr-defined]
        "example_hitpaw_batch",
        "example_hitpaw_catalogue",
        "example_hitpaw_folder",
        "example_hitpaw_mapped",
        "example_hitpaw_one_task",
        "example_hitpaw_two_step",
    ]
    parsed = {Path(path).name for path in getattr(dagbag, "file_last_changed", {})}
    assert "_settings.py" not in parsed
    assert "__init__.py" not in parsed
