"""Extra links: the cut-out and the mask, read from the task's XCom on Airflow 2.11 and 3.x.

``XCom.get_value`` (the one call both versions share) is replaced by a fake that serves what a task pushed
(``tests.unit.fakes.FakeXCom``); on Airflow 3 a second test goes one level deeper (``get_one``, the task
SDK's read) to check that the task instance's key reaches it intact.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from airflow_provider_hitpaw.links import (
    LINKS_XCOM_KEY,
    HitPawCutoutLink,
    HitPawMaskLink,
    links_value,
)
from tests.unit.fakes import FakeXCom

CUTOUT = "https://cdn.hitpaw.example/results/job-1/cutout.png"
MASK = "https://cdn.hitpaw.example/results/job-1/mask.png"


def ti_key(task_id: str = "segment", map_index: int = -1) -> Any:
    """A task instance key as both versions hand it to ``get_link`` (they read these attributes)."""
    try:
        from airflow.models.taskinstancekey import TaskInstanceKey  # Airflow 2

        return TaskInstanceKey("dag", task_id, "run-1", 1, map_index)
    except ImportError:
        return SimpleNamespace(
            dag_id="dag", task_id=task_id, run_id="run-1", try_number=1, map_index=map_index
        )


@pytest.fixture
def xcom(monkeypatch: pytest.MonkeyPatch) -> FakeXCom:
    fake = FakeXCom()
    monkeypatch.setattr(XCom, "get_value", fake.get_value)
    return fake


OPERATOR: Any = None  # the links do not look at the operator


def test_names() -> None:
    assert HitPawCutoutLink().name == "HitPaw cut-out"
    assert HitPawMaskLink().name == "HitPaw mask"
    assert isinstance(HitPawCutoutLink(), BaseOperatorLink)


def test_links_resolve_from_xcom(xcom: FakeXCom) -> None:
    key = ti_key()
    xcom.push(key, {"cutout": CUTOUT, "mask": MASK})
    assert HitPawCutoutLink().get_link(OPERATOR, ti_key=key) == CUTOUT
    assert HitPawMaskLink().get_link(OPERATOR, ti_key=key) == MASK
    assert [read_key for _, read_key in xcom.reads] == [LINKS_XCOM_KEY, LINKS_XCOM_KEY]


def test_mapped_instances_get_their_own_links(xcom: FakeXCom) -> None:
    first, second = ti_key(map_index=0), ti_key(map_index=1)
    xcom.push(first, {"cutout": CUTOUT, "mask": MASK})
    xcom.push(second, {"cutout": CUTOUT.replace("job-1", "job-2"), "mask": MASK.replace("job-1", "job-2")})
    assert "job-1" in HitPawCutoutLink().get_link(OPERATOR, ti_key=first)
    assert "job-2" in HitPawCutoutLink().get_link(OPERATOR, ti_key=second)
    assert "job-2" in HitPawMaskLink().get_link(OPERATOR, ti_key=second)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "https://not-a-dict.example/x.png",
        [CUTOUT, MASK],
        {},
        {"cutout": "", "mask": None},
        {"cutout": "javascript:alert(1)", "mask": "file:///etc/passwd"},
        {"cutout": "/relative/cutout.png", "mask": "s3://bucket/mask.png"},
        {"cutout": 42, "mask": {"url": MASK}},
    ],
)
def test_nothing_usable_gives_an_empty_link(xcom: FakeXCom, value: Any) -> None:
    key = ti_key()
    if value is not None:
        xcom.push(key, value)
    assert HitPawCutoutLink().get_link(OPERATOR, ti_key=key) == ""
    assert HitPawMaskLink().get_link(OPERATOR, ti_key=key) == ""


def test_one_link_without_the_other(xcom: FakeXCom) -> None:
    key = ti_key()
    xcom.push(key, {"cutout": CUTOUT})
    assert HitPawCutoutLink().get_link(OPERATOR, ti_key=key) == CUTOUT
    assert HitPawMaskLink().get_link(OPERATOR, ti_key=key) == ""


def test_airflow_3_reads_through_the_task_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Airflow 3 the link is resolved in the task runner from its RuntimeTaskInstance: the real
    ``get_value`` must turn that into the task SDK's ``get_one`` with the right coordinates."""
    pytest.importorskip("airflow.sdk.bases.xcom")
    calls: list[dict[str, Any]] = []

    def get_one(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return {"cutout": CUTOUT, "mask": MASK}

    monkeypatch.setattr(XCom, "get_one", get_one)
    key = ti_key(task_id="segment", map_index=3)
    assert HitPawMaskLink().get_link(OPERATOR, ti_key=key) == MASK
    assert calls == [
        {"key": LINKS_XCOM_KEY, "dag_id": "dag", "task_id": "segment", "run_id": "run-1", "map_index": 3}
    ]


def test_the_two_links_store_apart_on_airflow_3() -> None:
    cutout, mask = HitPawCutoutLink(), HitPawMaskLink()
    if not hasattr(cutout, "xcom_key"):
        pytest.skip("Airflow 2 resolves links in the webserver; nothing is stored")
    assert cutout.xcom_key != mask.xcom_key


# --- what the operator pushes --------------------------------------------------------------------------


def status(**overrides: Any) -> dict[str, Any]:
    return {"job_id": "job-1", "status": "COMPLETED", "res_url": CUTOUT, "mask_url": MASK, **overrides}


def test_links_value_from_hitpaw_urls() -> None:
    assert links_value(status()) == {"cutout": CUTOUT, "mask": MASK}
    assert links_value(status(), None) == {"cutout": CUTOUT, "mask": MASK}


def test_links_value_prefers_a_public_persisted_copy() -> None:
    persisted = {
        "res_path": "https://assets.example.com/cutouts/shoe.png",
        "mask_path": "https://assets.example.com/cutouts/shoe_mask.png",
    }
    assert links_value(status(), persisted) == {
        "cutout": "https://assets.example.com/cutouts/shoe.png",
        "mask": "https://assets.example.com/cutouts/shoe_mask.png",
    }


def test_links_value_keeps_hitpaw_urls_for_private_copies() -> None:
    persisted = {"res_path": "s3://bucket/out/shoe.png", "mask_path": "file:///data/out/shoe_mask.png"}
    assert links_value(status(), persisted) == {"cutout": CUTOUT, "mask": MASK}


def test_links_value_without_urls() -> None:
    assert links_value({"job_id": "j", "status": "COMPLETED"}) == {"cutout": "", "mask": ""}
    assert links_value(status(res_url="javascript:alert(1)")) == {"cutout": "", "mask": MASK}


def test_links_value_round_trip(xcom: FakeXCom) -> None:
    key = ti_key()
    xcom.push(
        key, links_value(status(), {"res_path": "file:///x.png", "mask_path": "https://a.example/m.png"})
    )
    assert HitPawCutoutLink().get_link(OPERATOR, ti_key=key) == CUTOUT
    assert HitPawMaskLink().get_link(OPERATOR, ti_key=key) == "https://a.example/m.png"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "s3://catalogue/cutouts/2026",
            "https://s3.console.aws.amazon.com/s3/buckets/catalogue?prefix=cutouts/2026/",
        ),
        ("gs://catalogue/cutouts", "https://console.cloud.google.com/storage/browser/catalogue/cutouts"),
        ("https://files.example.com/cutouts/", "https://files.example.com/cutouts/"),
        ("file:///data/cutouts", ""),
        ("memory://bucket/x", ""),
        ("javascript:alert(1)", ""),
    ],
)
def test_a_batch_links_to_its_results_folder_where_a_browser_can_open_it(uri: str, expected: str) -> None:
    from airflow_provider_hitpaw.links import browsable_folder

    assert browsable_folder(uri) == expected
