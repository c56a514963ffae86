"""The storage functions and the operators, in this process, against S3, GCS and Azure Blob servers:
refusals before paying, the versions that tell an edited input, conditional create against a racing
writer, a pair that lands whole or not at all, per-path connections, and the links to kept copies.

What the emulators cannot express is said where a test is skipped or expected to fail.
"""

from __future__ import annotations

import contextlib
import errno
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hitpaw import _kept, storage
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError, HitPawStorageError
from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook
from airflow_provider_hitpaw.links import folder_address, links_value, public_cloud
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator, SegmentImageOperator
from tests.conftest import task_context
from tests.integration.catalogue import unique_copy
from tests.stores.conftest import ConnectionsEnv
from tests.stores.stores import AZURITE_KEY, Store, conn_env_var
from tests.stores.test_dags_on_stores import MISSING_BUCKET_WORDS, NO_WRITE_WORDS, Books

SOURCE = "https://cdn.example.com/sku-123/main.jpg"
CUTOUT, MASK = storage.result_names(SOURCE)
RECORD = _kept.record_name(CUTOUT)


@pytest.fixture
def photo(hitpaw_emulator: Any) -> bytes:
    return requests.get(hitpaw_emulator.sample_url("shoe.jpg"), timeout=10).content


@pytest.fixture
def hook(hitpaw_emulator: Any) -> Iterator[HitPawHook]:
    """A hook on the emulator's connection: results on 127.0.0.1 may be downloaded."""
    with HitPawHook() as hook:
        yield hook


@pytest.fixture
def completed(hitpaw_emulator: Any) -> dict[str, Any]:
    """A completed job's status whose results are a PNG the emulator serves."""
    png = hitpaw_emulator.sample_url("portrait.png")
    return {"job_id": "job-on-a-store", "status": "COMPLETED", "res_url": png, "mask_url": png}


def context() -> Any:
    """A task's context, as the operators read it (a fake task instance), in a DAG run of its own: each
    call is another night."""
    import uuid

    return task_context(run_id=f"run-{uuid.uuid4().hex[:8]}")


def keep(store: Store, bucket: str, hook: HitPawHook, status: dict[str, Any], policy: str) -> dict[str, str]:
    return storage.persist_job_results(status, SOURCE, store.path(bucket, "out"), hook=hook, overwrite=policy)


def hidden(keys: list[str]) -> list[str]:
    """Partial downloads, set-aside files, probes: what must never be left behind."""
    return [key for key in keys if "/." in key or key.startswith(".")]


# --- refused before paying -------------------------------------------------------------------------


def test_an_output_bucket_that_does_not_exist_is_refused_in_the_stores_words(store: Store) -> None:
    folder = store.path(f"gone-{uuid.uuid4().hex[:12]}", "out")
    with pytest.raises(HitPawConfigurationError, match="cannot take the results") as raised:
        storage.check_writable_folder(folder)
    assert raised.value.field == "output_path"
    assert MISSING_BUCKET_WORDS[store.name] in str(raised.value)


def test_a_writable_output_folder_passes_and_keeps_nothing_of_the_probe(store: Store) -> None:
    bucket = store.new_bucket()
    storage.check_writable_folder(store.path(bucket, "out"))
    assert store.keys(bucket) == []


def test_an_output_folder_without_write_permission_is_refused(store: Store) -> None:
    if store.readonly_conn_id is None or store.readonly_bucket is None:
        pytest.skip(f"{store.name}: the emulator checks no credentials, so no connection lacks a permission")
    folder = store.path(store.readonly_bucket, "out", store.readonly_conn_id)
    with pytest.raises(HitPawConfigurationError, match="cannot take the results") as raised:
        storage.check_writable_folder(folder)
    said = NO_WRITE_WORDS[store.name]
    assert said is not None
    assert said in str(raised.value)
    assert not raised.value.retryable


def test_both_operators_refuse_an_unwritable_output_before_any_upload_or_coin(
    store: Store, hitpaw_emulator: Any, photo: bytes
) -> None:
    bucket = store.new_bucket()
    store.put(bucket, "in/a.jpg", photo)
    source, output = store.path(bucket, "in/a.jpg"), store.path(f"gone-{bucket}", "out")
    before = Books.of(hitpaw_emulator)
    batch = SegmentImageBatchOperator(
        task_id="b", source_paths=[source], output_path=output, deferrable=False
    )
    with pytest.raises(AirflowFailException, match="cannot take the results"):
        batch.execute(context())
    single = SegmentImageOperator(task_id="s", source_path=source, output_path=output, deferrable=False)
    with pytest.raises(AirflowFailException, match="cannot take the results"):
        single.execute(context())
    spent = Books.of(hitpaw_emulator).since(before)
    assert (spent.jobs, spent.uploads, spent.coins) == ([], 0, 0)


def test_a_missing_source_is_refused_in_the_stores_words(store: Store) -> None:
    bucket = store.new_bucket()
    with pytest.raises(HitPawConfigurationError, match="there is no file at") as raised:
        storage.read_source(store.path(bucket, "in/missing.jpg"))
    assert "FileNotFoundError" in str(raised.value)
    gone = f"gone-{bucket}"
    with pytest.raises(HitPawConfigurationError, match=f"{gone!r} does not exist"):
        storage.read_source(store.path(gone, "in/a.jpg"))


# --- what tells an edited input --------------------------------------------------------------------


def test_the_version_the_store_reports_tells_an_edited_input(store: Store, photo: bytes) -> None:
    bucket = store.new_bucket()
    path = store.path(bucket, "in/a.jpg")
    store.put(bucket, "in/a.jpg", photo)
    first = _kept.source_fingerprint(path)
    assert first.split(":", 1)[0] in ("ETag", "etag"), f"{store.name} reported no version: {first}"
    store.put(bucket, "in/a.jpg", unique_copy(photo, ".jpg", 7))
    assert _kept.source_fingerprint(path) != first


def test_a_batch_pays_once_per_picture_and_again_only_for_an_edited_one(
    store: Store, hitpaw_emulator: Any, photo: bytes, mocker: Any
) -> None:
    bucket = store.new_bucket()
    for n in range(3):
        store.put(bucket, f"in/{n}/main.jpg", unique_copy(photo, ".jpg", n))
    sources = [store.path(bucket, f"in/{n}/main.jpg") for n in range(3)]

    def night() -> tuple[Books, list[dict[str, Any]]]:
        before = Books.of(hitpaw_emulator)
        operator = SegmentImageBatchOperator(
            task_id="b",
            source_paths=sources,
            output_path=store.path(bucket, "out"),
            overwrite="skip",
            deferrable=False,
            poll_interval=1,
        )
        results = operator.execute(context())
        return Books.of(hitpaw_emulator).since(before), results

    first, _ = night()
    assert (len(first.jobs), first.uploads) == (3, 3)
    listed = mocker.spy(_kept, "list_folder")
    second, results = night()
    assert (len(second.jobs), second.uploads, second.coins) == (0, 0, 0)
    # Reuse was judged from one listing of the folder (three files per input), not lookups per input.
    assert listed.call_count == 1
    assert len(listed.spy_return) == 9
    assert [r["reused"] for r in results] == [True] * 3
    store.put(bucket, "in/1/main.jpg", unique_copy(photo, ".jpg", 99))
    third, results = night()
    assert (len(third.jobs), third.uploads) == (1, 1)
    assert [r["reused"] for r in results] == [True, False, True]


# --- two writers, one name -------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_writer_that_loses_the_race_gets_an_error_never_a_swap(
    store: Store, hook: HitPawHook, completed: dict[str, Any], policy: str, request: pytest.FixtureRequest
) -> None:
    """Another writer's pair lands between this writer's look and its write (right before its first
    request that writes the cut-out): the store's conditional create makes this writer the loser."""
    if not store.enforces_conditional_create:
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                reason="gcp-storage-emulator ignores ifGenerationMatch=0 (Google Cloud Storage honours it)",
            )
        )
    bucket = store.new_bucket()

    def another_writer() -> None:
        store.put(bucket, f"out/{CUTOUT}", b"the winner's cut-out")
        store.put(bucket, f"out/{MASK}", b"the winner's mask")

    with store.on_write(bucket, f"out/{CUTOUT}", another_writer):
        if policy == "fail":
            with pytest.raises(HitPawConfigurationError, match="already exists"):
                keep(store, bucket, hook, completed, policy)
        else:
            keep(store, bucket, hook, completed, policy)  # the winner's complete pair is kept
    assert store.get(bucket, f"out/{CUTOUT}") == b"the winner's cut-out"
    assert store.get(bucket, f"out/{MASK}") == b"the winner's mask"
    assert hidden(store.keys(bucket)) == []


def test_the_conditional_create_is_sent_as_each_store_spells_it(
    store: Store, hook: HitPawHook, completed: dict[str, Any]
) -> None:
    """What goes out with the creating request: S3 ``IfNoneMatch="*"``, Azure ``If-None-Match: *``,
    GCS ``ifGenerationMatch=0``; the last is what a real GCS judges and the emulator does not."""
    bucket = store.new_bucket()
    seen: list[str] = []
    fs = store.fs
    if store.name == "s3":
        fs.connect()

        def params(params: dict[str, Any], model: Any, **_: Any) -> None:
            if model.name == "PutObject" and params.get("Key") == f"out/{CUTOUT}":
                seen.append(str(params.get("IfNoneMatch")))

        fs.s3.meta.events.register("before-parameter-build.s3", params, unique_id="hitpaw-test-seen")
        undo = lambda: fs.s3.meta.events.unregister("before-parameter-build.s3", unique_id="hitpaw-test-seen")  # noqa: E731
    elif store.name == "gcs":
        real = fs._call

        async def call(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
            data = kwargs.get("data")
            if isinstance(data, bytes | bytearray) and json.dumps(f"out/{CUTOUT}").encode() in data[:2048]:
                seen.append(str(kwargs.get("ifGenerationMatch")))
            return await real(method, path, *args, **kwargs)

        fs._call = call

        def undo() -> None:
            del fs._call

    else:
        from azure.storage.blob._shared.policies import StorageRequestHook

        (policy,) = (
            runner._policy
            for runner in fs.service_client._pipeline._impl_policies
            if isinstance(getattr(runner, "_policy", None), StorageRequestHook)
        )

        def on_request(request: Any) -> None:
            http = request.http_request
            if http.method == "PUT" and http.url.split("?", 1)[0].endswith(f"/out/{CUTOUT}"):
                seen.append(str(http.headers.get("If-None-Match")))

        policy._request_callback = on_request

        def undo() -> None:
            policy._request_callback = None

    try:
        keep(store, bucket, hook, completed, "fail")
    finally:
        undo()
    assert seen, "no creating request was seen"
    assert seen[-1] == {"s3": "*", "gcs": "0", "azure": "*"}[store.name]


def test_keeping_on_gcs_asks_nothing_the_store_may_lack(
    gcs_store: Store, hook: HitPawHook, completed: dict[str, Any]
) -> None:
    """gcsfs's rename first tries GCS's ``moveTo``, which the emulator (and not every bucket) refuses
    with 501, retried for half a minute before gcsfs falls back to copy and delete, for each file; the
    provider copies and deletes itself."""
    bucket = gcs_store.new_bucket()
    fs = gcs_store.fs
    real = fs._call
    paths: list[str] = []

    async def call(method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        paths.append(path)
        return await real(method, path, *args, **kwargs)

    fs._call = call
    try:
        keep(gcs_store, bucket, hook, completed, "overwrite")
        keep(gcs_store, bucket, hook, completed, "overwrite")  # the old pair is set aside, then removed
    finally:
        del fs._call
    assert [path for path in paths if "moveTo" in path] == []
    assert gcs_store.keys(bucket, "out/") == sorted(f"out/{name}" for name in (CUTOUT, MASK, RECORD))


# --- both files or neither ----------------------------------------------------------------------------


def failing_write(store: Store) -> BaseException:
    """How each store's filesystem fails a write: s3fs an OSError, gcsfs its HttpError, adlfs the
    Azure SDK's error."""
    if store.name == "gcs":
        from gcsfs.retry import HttpError

        failure: BaseException = HttpError({"code": 503, "message": "injected: the store failed this write"})
        return failure
    if store.name == "azure":
        from azure.core.exceptions import HttpResponseError

        return HttpResponseError(message="injected: the store failed this write")
    return OSError(errno.EIO, "injected: the store failed this write")


@contextlib.contextmanager
def no_retries_on_azure(store: Store) -> Iterator[None]:
    """The Azure SDK retries any of its errors in its pipeline (15 s, then more): for the injected
    failure to reach adlfs, as a failure that outlived the retries does, this test turns them off."""
    if store.name != "azure":
        yield
        return
    from azure.storage.blob._shared.policies import StorageRetryPolicy

    (retry,) = (
        policy
        for policy in store.fs.service_client._pipeline._impl_policies
        if isinstance(policy, StorageRetryPolicy)
    )
    earlier, retry.total_retries = retry.total_retries, 0
    try:
        yield
    finally:
        retry.total_retries = earlier


@pytest.mark.parametrize("policy", ["fail", "overwrite"])
def test_a_failed_write_of_the_mask_leaves_no_cut_out_without_it(
    store: Store, hook: HitPawHook, completed: dict[str, Any], policy: str
) -> None:
    """The mask's write fails (after the cut-out's succeeded): no new cut-out stays without its mask,
    an old pair stays as it was, nothing hidden is left, and the failure is a retryable storage error
    quoting the store, whatever type the store's filesystem raised."""
    bucket = store.new_bucket()
    old = policy == "overwrite"
    if old:
        store.put(bucket, f"out/{CUTOUT}", b"old cut-out")
        store.put(bucket, f"out/{MASK}", b"old mask")
    failure = failing_write(store)

    def fail() -> None:
        raise failure

    with (
        no_retries_on_azure(store),
        store.on_write(bucket, f"out/{MASK}", fail),
        pytest.raises(HitPawStorageError) as raised,
    ):
        keep(store, bucket, hook, completed, policy)
    assert "injected: the store failed this write" in str(raised.value)
    assert raised.value.retryable
    keys = store.keys(bucket)
    assert hidden(keys) == []
    if old:
        assert store.get(bucket, f"out/{CUTOUT}") == b"old cut-out"
        assert store.get(bucket, f"out/{MASK}") == b"old mask"
    else:
        assert keys == []
    keep(store, bucket, hook, completed, policy)  # a retry keeps the pair, and its record
    assert store.keys(bucket, "out/") == sorted(f"out/{name}" for name in (CUTOUT, MASK, RECORD))


# --- per-path connections ------------------------------------------------------------------------------


def test_one_batch_reads_and_writes_through_two_connections_to_two_endpoints(
    s3_store: Store, s3_second: Store, hitpaw_emulator: Any, photo: bytes
) -> None:
    """Each ``ObjectStoragePath`` carries its own connection: one source on each moto server, the
    results on the second (whose IAM checks refuse the first one's keys)."""
    first, second = s3_store.new_bucket(), s3_second.new_bucket()
    s3_store.put(first, "in/a.jpg", unique_copy(photo, ".jpg", 1))
    s3_second.put(second, "in/b.jpg", unique_copy(photo, ".jpg", 2))
    operator = SegmentImageBatchOperator(
        task_id="b",
        source_paths=[s3_store.path(first, "in/a.jpg"), s3_second.path(second, "in/b.jpg")],
        output_path=s3_second.path(second, "out"),
        deferrable=False,
        poll_interval=1,
        finish={"thumb": {"format": "webp", "max_side": 100}},
    )
    before = Books.of(hitpaw_emulator)
    results = operator.execute(context())
    spent = Books.of(hitpaw_emulator).since(before)
    assert [r["status"] for r in results] == ["COMPLETED", "COMPLETED"]
    assert [r["error"] for r in results] == [None, None]
    assert (len(spent.jobs), spent.uploads) == (2, 2)
    assert len([key for key in s3_second.keys(second, "out/") if key.endswith(".png")]) == 4
    # What is made from the kept pairs goes through the output's own connection too (a URI loses it).
    assert len([key for key in s3_second.keys(second, "out/") if key.endswith(".thumb.webp")]) == 2
    assert [key for key in s3_second.keys(second, "out/", ledgers=True) if key.endswith("page-001.jpg")]


# --- links to the kept copies --------------------------------------------------------------------------


def test_a_custom_endpoint_gets_no_console_link(store: Store) -> None:
    folder = store.path("kept", "out")
    assert public_cloud(folder.fs) is None
    assert folder_address(folder) == ""
    status = {
        "res_url": "https://results.hitpaw.example/c.png",
        "mask_url": "https://results.hitpaw.example/m.png",
    }
    kept = {"res_path": store.uri("kept", "out/c.png"), "mask_path": store.uri("kept", "out/m.png")}
    # The kept copy cannot be opened: HitPaw's own copy (8 days), not a console of another endpoint.
    assert links_value(status, kept, folder) == {"cutout": status["res_url"], "mask": status["mask_url"]}


REAL_CLOUD_CONNECTIONS = {
    "s3": json.dumps(
        {
            "conn_type": "aws",
            "login": "AKIAEXAMPLE",
            "password": "example",
            "extra": {"region_name": "eu-west-1"},
        }
    ),
    "gcs": '{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true, "project": "example"}}',
    "azure": json.dumps(
        {
            "conn_type": "wasb",
            "login": "hitpawexample",
            "password": AZURITE_KEY,
            "extra": {"account_name": "hitpawexample"},
        }
    ),
}
CONSOLE = {
    "s3": (
        "https://s3.console.aws.amazon.com/s3/buckets/kept?prefix=out/",
        "https://s3.console.aws.amazon.com/s3/object/kept?prefix=out/c.png",
    ),
    "gcs": (
        "https://console.cloud.google.com/storage/browser/kept/out",
        "https://console.cloud.google.com/storage/browser/_details/kept/out/c.png",
    ),
    "azure": (
        "https://hitpawexample.blob.core.windows.net/kept?restype=container&comp=list&prefix=out/",
        "https://hitpawexample.blob.core.windows.net/kept/out/c.png",
    ),
}


def test_the_real_clouds_get_their_console(
    store: Store, monkeypatch: pytest.MonkeyPatch, connections_env: ConnectionsEnv
) -> None:
    """Connections to the clouds' own endpoints (built, never used: nothing leaves this machine)."""
    conn_id = f"hitpaw_real_{store.name}_{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv(conn_env_var(conn_id), REAL_CLOUD_CONNECTIONS[store.name])
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    folder = store.path("kept", "out", conn_id)
    assert public_cloud(folder.fs) == {"s3": "aws", "gcs": "gcp", "azure": "azure"}[store.name]
    assert folder_address(folder) == CONSOLE[store.name][0]
    kept = {"res_path": store.uri("kept", "out/c.png"), "mask_path": store.uri("kept", "out/m.png")}
    links = links_value({"res_url": "https://results.hitpaw.example/c.png"}, kept, folder)
    assert links["cutout"] == CONSOLE[store.name][1]
