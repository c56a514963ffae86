"""Extra links: the cut-out and the mask, read from the task's XCom on Airflow 2.11 and 3.x.

``XCom.get_value`` (the one call both versions share) is replaced by a fake that serves what a task pushed
(``tests.unit.fakes.FakeXCom``); on Airflow 3 a second test goes one level deeper (``get_one``, the task
SDK's read) to check that the task instance's key reaches it intact.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

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


def test_links_value_keeps_hitpaw_urls_for_copies_no_browser_opens() -> None:
    """A local file, or a copy in a store whose endpoint is not known: HitPaw's copy while it lasts."""
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


# --- links to the kept copies, judged by the endpoint the storage is reached at ---------------------


def fake_fs(package: str, **attributes: Any) -> Any:
    """A stand-in for a filesystem of ``package`` (s3fs, gcsfs, adlfs): the links look only at its
    package and at where it sends requests, so no cloud library is needed here."""
    cls = type("FakeFileSystem", (), {"__module__": f"{package}.core"})
    fs = cls()
    fs.__dict__.update(attributes)
    return fs


AWS = fake_fs("s3fs", endpoint_url=None, client_kwargs={})
AWS_REGIONAL = fake_fs("s3fs", endpoint_url="https://s3.eu-west-1.amazonaws.com", client_kwargs={})
MINIO = fake_fs("s3fs", endpoint_url="https://minio.example.com", client_kwargs={})
MOTO = fake_fs("s3fs", endpoint_url=None, client_kwargs={"endpoint_url": "http://127.0.0.1:5000"})
AWS_LOOKALIKE = fake_fs("s3fs", endpoint_url="https://amazonaws.com.example.net", client_kwargs={})
GCP = fake_fs("gcsfs", _location="https://storage.googleapis.com")
GCS_EMULATOR = fake_fs("gcsfs", _location="http://127.0.0.1:4443")
AZURE = fake_fs("adlfs", service_client=SimpleNamespace(url="https://acct.blob.core.windows.net/"))
AZURITE = fake_fs("adlfs", service_client=SimpleNamespace(url="http://127.0.0.1:10000/devstoreaccount1/"))


@pytest.mark.parametrize(
    ("fs", "cloud"),
    [
        (AWS, "aws"),
        (AWS_REGIONAL, "aws"),
        (MINIO, None),
        (MOTO, None),
        (AWS_LOOKALIKE, None),
        (fake_fs("s3fs", endpoint_url="https://attacker.test\\@s3.amazonaws.com", client_kwargs={}), None),
        (fake_fs("s3fs", endpoint_url="https://user@s3.amazonaws.com", client_kwargs={}), None),
        (GCP, "gcp"),
        (GCS_EMULATOR, None),
        (AZURE, "azure"),
        (AZURITE, None),
        (fake_fs("fsspec"), None),
        (None, None),
    ],
)
def test_only_the_clouds_own_endpoints_are_a_public_cloud(fs: Any, cloud: str | None) -> None:
    from airflow_provider_hitpaw.links import public_cloud

    assert public_cloud(fs) == cloud


def test_an_endpoint_named_in_the_environment_is_no_public_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore reads ``AWS_ENDPOINT_URL(_S3)``: an s3fs without its own endpoint then talks to it."""
    from airflow_provider_hitpaw.links import public_cloud

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    assert public_cloud(AWS) is None


@pytest.mark.parametrize(
    ("uri", "fs", "expected"),
    [
        (
            "s3://catalogue/cutouts/2026",
            AWS,
            "https://s3.console.aws.amazon.com/s3/buckets/catalogue?prefix=cutouts/2026/",
        ),
        ("gs://catalogue/cutouts", GCP, "https://console.cloud.google.com/storage/browser/catalogue/cutouts"),
        (
            "abfs://catalogue/cutouts",
            AZURE,
            "https://acct.blob.core.windows.net/catalogue?restype=container&comp=list&prefix=cutouts/",
        ),
        # The batch's link once pointed at AWS's console whatever the connection's endpoint_url.
        ("s3://catalogue/cutouts", MOTO, ""),
        ("s3://catalogue/cutouts", MINIO, ""),
        ("gs://catalogue/cutouts", GCS_EMULATOR, ""),
        ("abfs://catalogue/cutouts", AZURITE, ""),
        ("s3://catalogue/cutouts", None, ""),  # the endpoint unknown: no link rather than a wrong one
        ("gs://catalogue/cutouts", AWS, ""),
        ("https://files.example.com/cutouts/", None, "https://files.example.com/cutouts/"),
        ("file:///data/cutouts", None, ""),
        ("memory://bucket/x", None, ""),
        ("javascript:alert(1)", AWS, ""),
        ("s3://user@catalogue/cutouts", AWS, ""),
    ],
)
def test_a_batch_links_to_its_results_folder_where_a_browser_can_open_it(
    uri: str, fs: Any, expected: str
) -> None:
    from airflow_provider_hitpaw.links import browsable_folder

    assert browsable_folder(uri, fs) == expected


def test_a_batch_folder_link_is_judged_by_the_folders_own_connection() -> None:
    from airflow_provider_hitpaw.links import folder_address

    assert folder_address(folder_of("s3://kept/out", AWS)) == (
        "https://s3.console.aws.amazon.com/s3/buckets/kept?prefix=out/"
    )
    assert folder_address(folder_of("s3://kept/out", MOTO)) == ""


def folder_of(uri: str, fs: Any) -> Any:
    """An output folder as the links see it: a path whose filesystem is ``fs``."""
    scheme, _, rest = uri.partition("://")
    return SimpleNamespace(fs=fs, protocol=scheme, path=rest)


KEPT = {"res_path": "s3://kept/out/shoe-1.png", "mask_path": "s3://kept/out/shoe-1_mask.png"}


def test_single_image_links_open_the_kept_copy_in_the_console() -> None:
    """Once HitPaw's copies are gone (8 days), the links still open the results: the kept copies."""
    assert links_value(status(), KEPT, folder_of("s3://kept/out", AWS)) == {
        "cutout": "https://s3.console.aws.amazon.com/s3/object/kept?prefix=out/shoe-1.png",
        "mask": "https://s3.console.aws.amazon.com/s3/object/kept?prefix=out/shoe-1_mask.png",
    }
    gcs = {"res_path": "gs://kept/out/shoe-1.png", "mask_path": "gs://kept/out/shoe-1_mask.png"}
    assert links_value(status(), gcs, folder_of("gs://kept/out", GCP))["mask"] == (
        "https://console.cloud.google.com/storage/browser/_details/kept/out/shoe-1_mask.png"
    )
    azure = {"res_path": "abfs://kept/out/shoe 1.png", "mask_path": "abfs://kept/out/shoe 1_mask.png"}
    assert links_value(status(), azure, folder_of("abfs://kept/out", AZURE))["cutout"] == (
        "https://acct.blob.core.windows.net/kept/out/shoe%201.png"
    )


def test_a_kept_copy_behind_a_custom_endpoint_links_to_hitpaws_copy_or_nothing() -> None:
    """No console of another account's bucket: HitPaw's own copy while it lasts, nothing for a reuse."""
    folder = folder_of("s3://kept/out", MOTO)
    assert links_value(status(), KEPT, folder) == {"cutout": CUTOUT, "mask": MASK}
    reused = {"job_id": "job-1", "status": "COMPLETED", "res_url": None, "mask_url": None, **KEPT}
    assert links_value(reused, reused, folder) == {"cutout": "", "mask": ""}


def test_a_folder_whose_filesystem_cannot_be_had_gives_no_console_link() -> None:
    class Broken:
        protocol = "s3"
        path = "kept/out"

        @property
        def fs(self) -> Any:
            raise ValueError("no such connection")

    assert links_value(status(), KEPT, Broken()) == {"cutout": CUTOUT, "mask": MASK}  # type: ignore[arg-type]


# --- a task that never keeps anything still leaves its links a value -----------------------------------


def test_a_task_that_only_submits_or_is_refused_leaves_its_links_a_value(fake_hook: Any, mocker: Any) -> None:
    """The links are resolved whenever a try ends: without a value they logged ``XCom not found``
    (an error, twice) for every submit-only task and every task refused before submitting."""
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_hitpaw._api import SegmentationJob
    from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
    from tests.unit.fakes import task_context

    mocker.patch.object(SegmentImageOperator, "_hook", return_value=fake_hook)
    fake_hook.submit_segmentation.return_value = SegmentationJob(job_id="job-1", consume_coins=20)
    submitted = task_context()
    SegmentImageOperator(task_id="s", file_url=CUTOUT, wait_for_completion=False).execute(
        cast(Any, submitted)
    )
    assert submitted["ti"].xcom[LINKS_XCOM_KEY] == {"cutout": "", "mask": ""}

    refused = task_context()
    with pytest.raises(AirflowFailException):
        SegmentImageOperator(task_id="s", file_url="ftp://files.example.com/a.jpg").execute(
            cast(Any, refused)
        )
    assert refused["ti"].xcom[LINKS_XCOM_KEY] == {"cutout": "", "mask": ""}
