"""Issue 4 end to end on the emulator: results kept in the user's storage, inputs from any storage,
links, assets and lineage."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hitpaw._kept import record_name
from airflow_provider_hitpaw.links import LINKS_XCOM_KEY
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor
from airflow_provider_hitpaw.storage import input_identity, result_names
from tests.conftest import FakeStateStore, RecordingTaskInstance, run_deferred, task_context

PNG = b"\x89PNG\r\n\x1a\n"


def context() -> dict[str, Any]:
    return {"ti": RecordingTaskInstance()}


@pytest.fixture
def memory_root() -> str:
    """A ``memory://`` root, attached as each Airflow version attaches a filesystem."""
    from fsspec.implementations.memory import MemoryFileSystem

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]

    attach(protocol="memory", fs=MemoryFileSystem())
    return f"memory://results-{uuid.uuid4().hex[:8]}"


def test_results_are_copied_next_to_each_other_named_after_the_input(
    hitpaw_emulator: Any, tmp_path: Path
) -> None:
    out = tmp_path / "cutouts"
    ctx = context()
    operator = SegmentImageOperator(
        task_id="t",
        file_url=hitpaw_emulator.sample_url("shoe.jpg"),
        output_path=f"file://{out}",
        poll_interval=1,
    )
    result = run_deferred(operator, ctx)
    res, mask = result_names(hitpaw_emulator.sample_url("shoe.jpg"))
    assert res.startswith("shoe-")
    assert result["res_path"] == f"file://{out}/{res}"
    assert result["mask_path"] == f"file://{out}/{mask}"
    assert (out / res).read_bytes() == requests.get(result["res_url"], timeout=10).content
    assert (out / mask).read_bytes().startswith(PNG)
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith(".hitpaw-"))
    assert names == sorted([res, mask, record_name(res)]), "a partial file was left"
    # file:// has no public URL: the links point at HitPaw's own copies.
    assert ctx["ti"].xcom[LINKS_XCOM_KEY] == {"cutout": result["res_url"], "mask": result["mask_url"]}


def test_results_to_memory_storage_in_process(hitpaw_emulator: Any, memory_root: str) -> None:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    operator = SegmentImageOperator(
        task_id="t",
        file_url=hitpaw_emulator.sample_url("portrait.png"),
        output_path=ObjectStoragePath(f"{memory_root}/out/"),
        deferrable=False,
        poll_interval=1,
    )
    result = operator.execute(context())
    assert ObjectStoragePath(result["res_path"]).read_bytes().startswith(PNG)
    assert (
        ObjectStoragePath(result["mask_path"]).name
        == result_names(hitpaw_emulator.sample_url("portrait.png"))[1]
    )


@pytest.mark.parametrize("policy", ["skip", "fail", "overwrite"])
def test_overwrite_policy(hitpaw_emulator: Any, tmp_path: Path, policy: str) -> None:
    res, mask = result_names(hitpaw_emulator.sample_url("mug.jpg"))
    (tmp_path / res).write_bytes(b"older")
    (tmp_path / mask).write_bytes(b"older mask")
    operator = SegmentImageOperator(
        task_id="t",
        file_url=hitpaw_emulator.sample_url("mug.jpg"),
        output_path=str(tmp_path),
        overwrite=policy,
        deferrable=False,
        poll_interval=1,
    )
    if policy == "fail":
        with pytest.raises(AirflowFailException, match="output_path"):
            operator.execute(context())
        assert (tmp_path / res).read_bytes() == b"older"
        assert hitpaw_emulator.state()["jobs"] == [], "refused only after the image was paid for"
        return
    operator.execute(context())
    # Under skip too: no record says these files were made from this input, so they are written anew.
    assert (tmp_path / res).read_bytes() != b"older"
    assert (tmp_path / record_name(res)).exists()


def test_source_from_local_storage_is_uploaded_and_segmented(hitpaw_emulator: Any, tmp_path: Path) -> None:
    source = tmp_path / "in" / "shoe-042.jpg"
    source.parent.mkdir()
    source.write_bytes(requests.get(hitpaw_emulator.sample_url("shoe.jpg"), timeout=10).content)
    out = tmp_path / "out"
    operator = SegmentImageOperator(
        task_id="t", source_path=str(source), output_path=str(out), poll_interval=1
    )
    result = run_deferred(operator, context())
    assert result["source_path"] == str(source)
    assert "/oss/objects/" in result["file_url"], "the access_url of the upload was not submitted"
    assert result["status"] == "COMPLETED"
    kept = result_names(input_identity(str(source)))
    assert kept[0].startswith("shoe-042-")
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".hitpaw-")) == sorted(
        [*kept, record_name(kept[0])]
    )
    state = hitpaw_emulator.state()
    assert state["uploads"] == 1
    assert len(state["jobs"]) == 1


def test_source_whose_bytes_do_not_match_its_name_is_refused_before_upload(
    hitpaw_emulator: Any, tmp_path: Path
) -> None:
    source = tmp_path / "photo.jpg"
    source.write_bytes(requests.get(hitpaw_emulator.sample_url("portrait.png"), timeout=10).content)
    operator = SegmentImageOperator(task_id="t", source_path=str(source))
    with pytest.raises(AirflowFailException, match="source_path"):
        operator.execute(context())
    state = hitpaw_emulator.state()
    assert (state["uploads"], state["jobs"]) == (0, [])


def test_sensor_keeps_results_too(hitpaw_emulator: Any, tmp_path: Path) -> None:
    with SegmentImageOperator(
        task_id="s", file_url=hitpaw_emulator.sample_url("product.webp")
    )._hook() as hook:
        job = hook.submit_segmentation(hitpaw_emulator.sample_url("product.webp"))
    sensor = SegmentationSensor(task_id="w", job_id=job.job_id, output_path=str(tmp_path), poll_interval=1)
    result = run_deferred(sensor, context())
    res, mask = result_names(hitpaw_emulator.sample_url("product.webp"))
    assert result["res_path"].endswith(f"/{res}")
    assert (tmp_path / mask).read_bytes().startswith(PNG)


def test_emit_asset_declares_the_output_folder() -> None:
    operator = SegmentImageOperator(
        task_id="t", file_url="https://h/a.jpg", output_path="file:///data/cutouts/", emit_asset=True
    )
    (asset,) = operator.outlets
    assert asset.uri.startswith("file:///data/cutouts")
    with pytest.raises(ValueError, match="emit_asset"):
        SegmentImageOperator(
            task_id="t", file_url="https://h/a.jpg", output_path="{{ var.value.out }}", emit_asset=True
        )


def test_openlineage_names_the_input_and_the_kept_files(hitpaw_emulator: Any, tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    operator = SegmentImageOperator(
        task_id="t",
        file_url=hitpaw_emulator.sample_url("shoe.jpg"),
        output_path=str(tmp_path),
        deferrable=False,
        poll_interval=1,
    )
    operator.execute(context())
    lineage = operator.get_openlineage_facets_on_complete(None)
    (source,) = lineage.inputs
    assert source.namespace == hitpaw_emulator.base_url
    assert source.name == "/samples/shoe.jpg"
    names = result_names(hitpaw_emulator.sample_url("shoe.jpg"))
    assert sorted(d.name for d in lineage.outputs) == sorted(f"{tmp_path}/{name}" for name in names)
    assert {d.namespace for d in lineage.outputs} == {"file"}


# --- an output nobody can write to is refused before the image is paid for ---------------------------


@pytest.mark.parametrize("rendered", ["", "nosuchfs://bucket/x", "relative/folder"])
@pytest.mark.parametrize("batch", [False, True], ids=["one-image", "batch"])
def test_an_output_rendered_unusable_fails_before_any_coin(
    hitpaw_emulator: Any, rendered: str, batch: bool
) -> None:
    """A template may render the output to something no storage takes: once found only when the paid job
    came back."""
    from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator

    url = hitpaw_emulator.sample_url("shoe.jpg")
    if batch:
        operator: Any = SegmentImageBatchOperator(
            task_id="b", file_urls=[url], output_path="{{ params.out }}", poll_interval=1
        )
    else:
        operator = SegmentImageOperator(task_id="s", file_url=url, output_path="{{ params.out }}")
    operator.output_path = rendered  # as Airflow leaves it after rendering the template
    with pytest.raises(Exception, match="output_path"):
        run_deferred(operator, context())
    assert hitpaw_emulator.state()["jobs"] == []
    assert hitpaw_emulator.state()["uploads"] == 0


@pytest.mark.parametrize(
    "options",
    [{"output_path": 42}, {"timeout": 1e15}, {"poll_interval": 1e-9}],
    ids=["output-not-a-path", "timeout-past-hitpaws-8-days", "poll-faster-than-a-second"],
)
def test_what_could_only_fail_after_paying_is_refused_when_the_dag_is_parsed(options: dict[str, Any]) -> None:
    from airflow_provider_hitpaw.exceptions import HitPawConfigurationError
    from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator
    from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor

    field = next(iter(options))
    url = "https://images.example.test/a.jpg"
    with pytest.raises(HitPawConfigurationError, match=field):
        SegmentImageOperator(task_id="s", file_url=url, **options)
    with pytest.raises(HitPawConfigurationError, match=field):
        SegmentImageBatchOperator(task_id="b", file_urls=[url], **options)
    if field != "output_path":
        with pytest.raises(HitPawConfigurationError, match=field):
            SegmentationSensor(task_id="w", job_id="job-1", **options)


# --- overwrite="fail" on a retry of the same task -------------------------------------------------------


def test_fail_lets_a_retry_keep_what_its_own_earlier_try_kept(hitpaw_emulator: Any, tmp_path: Path) -> None:
    """The first try kept the pair and was lost after (a worker gone before it reported success): the
    retry waits for the same job (Airflow 3.3's task state store) and does not fail on its own files."""
    store = FakeStateStore()
    url = hitpaw_emulator.sample_url("shoe.jpg")

    def make() -> SegmentImageOperator:
        return SegmentImageOperator(
            task_id="t", file_url=url, output_path=str(tmp_path), overwrite="fail", poll_interval=1
        )

    first = run_deferred(make(), task_context(store=store))
    again = make().execute(task_context(store=store))  # the job is done: no deferral this time
    assert again["job_id"] == first["job_id"]
    assert again["res_path"] == first["res_path"]
    assert len(hitpaw_emulator.state()["jobs"]) == 1
    with pytest.raises(AirflowFailException, match="already exists"):  # another run: another task
        make().execute(task_context(store=FakeStateStore(), run_id="run-2"))
    assert len(hitpaw_emulator.state()["jobs"]) == 1


# --- one job id for two images ---------------------------------------------------------------------------


def test_one_job_id_answered_for_two_images_keeps_nothing_for_the_second(
    hitpaw_emulator: Any, tmp_path: Path
) -> None:
    """Two mapped tasks, one base URL that answers every submission with the first job's id: the second
    image's folder once got the first image's cut-out."""
    from airflow_provider_hitpaw.exceptions import HitPawUntrustedAnswerError

    hitpaw_emulator.set_faults(["same_job_id"])
    first_url, second_url = hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")
    first_out, second_out = tmp_path / "0", tmp_path / "1"
    first = run_deferred(
        SegmentImageOperator(task_id="t", file_url=first_url, output_path=str(first_out), poll_interval=1),
        context(),
    )
    assert first["status"] == "COMPLETED"
    with pytest.raises(AirflowFailException, match="one job cannot be two images") as raised:
        run_deferred(
            SegmentImageOperator(
                task_id="t", file_url=second_url, output_path=str(second_out), poll_interval=1
            ),
            context(),
        )
    assert isinstance(raised.value.__cause__, HitPawUntrustedAnswerError)
    assert "/samples/shoe.jpg" in str(raised.value)
    assert (
        not second_out.exists()
        or [p for p in second_out.iterdir() if not p.name.startswith(".hitpaw-")] == []
    )


def test_the_sensor_told_the_submitted_image_refuses_another(hitpaw_emulator: Any, tmp_path: Path) -> None:
    with SegmentImageOperator(task_id="s", file_url=hitpaw_emulator.sample_url("mug.jpg"))._hook() as hook:
        job = hook.submit_segmentation(hitpaw_emulator.sample_url("mug.jpg"))
    sensor = SegmentationSensor(
        task_id="w",
        job_id=job.job_id,
        file_url=hitpaw_emulator.sample_url("shoe.jpg"),
        output_path=str(tmp_path),
        poll_interval=1,
    )
    with pytest.raises(AirflowFailException, match="one job cannot be two images"):
        run_deferred(sensor, context())
    assert list(tmp_path.iterdir()) == []


# --- a poll that failed is not a job that failed ---------------------------------------------------------


def test_a_poll_that_fails_for_good_is_retried_and_the_retry_waits_for_the_same_job(
    hitpaw_emulator: Any, tmp_path: Path
) -> None:
    """A status answer over the cap once ended the task for good, the job paid for and running on."""
    from airflow_provider_hitpaw.exceptions import HitPawUntrustedAnswerError

    hitpaw_emulator.set_faults([f"huge_json:first_n=1,paths=/api/task-status,size_bytes={8 * 1024 * 1024}"])
    store = FakeStateStore()

    def make() -> SegmentImageOperator:
        return SegmentImageOperator(
            task_id="t",
            file_url=hitpaw_emulator.sample_url("shoe.jpg"),
            output_path=str(tmp_path),
            poll_interval=1,
        )

    with pytest.raises(HitPawUntrustedAnswerError, match="the job itself has not failed"):
        run_deferred(make(), task_context(store=store))
    result = run_deferred(make(), task_context(store=store))
    assert result["status"] == "COMPLETED"
    assert len(hitpaw_emulator.state()["jobs"]) == 1, "the retry paid for the image again"
