"""Uploads against the HitPaw emulator: pre-sign (one and a batch), PUT, read back, segment, persist."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw._api import PresignedUpload
from airflow_provider_hitpaw._kept import record_name
from airflow_provider_hitpaw._png import check_png
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawInvalidRequestError,
)
from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook
from airflow_provider_hitpaw.storage import (
    input_identity,
    open_source,
    persist_job_results,
    read_source,
    result_names,
)

FAST_RETRIES = _api.RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


def sample(emulator: Any, name: str) -> bytes:
    response = requests.get(emulator.sample_url(name), timeout=10)
    response.raise_for_status()
    return response.content


def requests_to(emulator: Any, path: str) -> int:
    return int(emulator.state()["requests"].get(path, 0))


@pytest.fixture
def hook(hitpaw_emulator: Any) -> Any:
    with HitPawHook("hitpaw_default", retry_policy=FAST_RETRIES) as hook:
        yield hook


def test_presign_put_read_back_and_segment(hitpaw_emulator: Any, hook: HitPawHook) -> None:
    data = sample(hitpaw_emulator, "shoe.jpg")
    upload = hook.presign_upload("shoe.jpg", "image/jpeg", expire_seconds=600)
    assert upload.content_type == "image/jpeg"
    assert upload.object_key.endswith(".jpg")
    assert upload.access_url.startswith(hitpaw_emulator.base_url)

    hook.upload(upload, data)
    fetched = requests.get(upload.access_url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["Content-Type"].startswith("image/jpeg")

    job = hook.submit_segmentation(upload.access_url)
    status = hook.wait_for_completion(job.job_id, poll_interval=0.05, timeout=30)
    assert status.is_completed
    assert status.res_url
    assert status.mask_url


def test_presign_batch_of_21_takes_two_calls(hitpaw_emulator: Any, hook: HitPawHook) -> None:
    files = [(f"item-{i:02}.png", "image/png") for i in range(21)]
    results = hook.presign_uploads(files)
    assert requests_to(hitpaw_emulator, _api.PRESIGN_BATCH_PATH) == 2
    assert len(results) == 21
    assert all(isinstance(r, PresignedUpload) for r in results)
    keys = {r.object_key for r in results if isinstance(r, PresignedUpload)}
    assert len(keys) == 21
    png = sample(hitpaw_emulator, "portrait.png")
    last = results[-1]
    assert isinstance(last, PresignedUpload)
    hook.upload(last, png)
    assert requests.get(last.access_url, timeout=10).content == png


def test_batch_keeps_a_refused_file_in_its_place(hitpaw_emulator: Any, hook: HitPawHook, mocker: Any) -> None:
    # Our own checks would refuse the mismatch before sending; let it through to see the service's answer.
    mocker.patch.object(
        _api,
        "_presign_file",
        lambda filename, content_type: {"filename": filename, "content_type": content_type},
    )
    results = hook.presign_uploads(
        [("a.jpg", "image/jpeg"), ("b.jpg", "image/png"), ("c.webp", "image/webp")]
    )
    assert isinstance(results[0], PresignedUpload)
    assert isinstance(results[1], HitPawInvalidRequestError)
    assert isinstance(results[2], PresignedUpload)


def test_stream_a_local_file_segment_and_persist(
    hitpaw_emulator: Any, hook: HitPawHook, tmp_path: Path
) -> None:
    source = tmp_path / "in" / "product.webp"
    source.parent.mkdir()
    source.write_bytes(sample(hitpaw_emulator, "product.webp"))

    filename, content_type, size = read_source(str(source))
    assert (filename, content_type, size) == ("product.webp", "image/webp", source.stat().st_size)
    upload = hook.presign_upload(filename, content_type)
    with open_source(str(source)) as stream:
        hook.upload(upload, stream)
    assert requests.get(upload.access_url, timeout=10).content == source.read_bytes()

    job = hook.submit_segmentation(upload.access_url)
    status = hook.wait_for_completion(job.job_id, poll_interval=0.05, timeout=30)
    identity = input_identity(str(source))
    paths = persist_job_results(status, identity, str(tmp_path / "out"), hook=hook)
    names = result_names(identity)
    assert paths == {
        "res_path": f"file://{tmp_path}/out/{names[0]}",
        "mask_path": f"file://{tmp_path}/out/{names[1]}",
    }
    for name in names:
        check_png((tmp_path / "out" / name).read_bytes())
    # The pair, and the record beside it that lets a later run reuse it.
    assert sorted(
        p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".hitpaw-")
    ) == sorted([*names, record_name(names[0])])


def test_content_type_mismatch_is_refused_before_upload(hitpaw_emulator: Any, tmp_path: Path) -> None:
    disguised = tmp_path / "disguised.png"
    disguised.write_bytes(sample(hitpaw_emulator, "disguised.png"))  # JPEG bytes under a .png name
    gif = tmp_path / "drawing.gif"
    gif.write_bytes(sample(hitpaw_emulator, "drawing.gif"))
    before = dict(hitpaw_emulator.state()["requests"])
    for path in (disguised, gif):
        with pytest.raises(HitPawConfigurationError) as excinfo:
            read_source(str(path))
        assert excinfo.value.field == "source_path"
    assert hitpaw_emulator.state()["requests"] == before  # nothing pre-signed, nothing uploaded
    assert hitpaw_emulator.state()["uploads"] == 0


def test_wrong_content_type_at_put_is_refused(hitpaw_emulator: Any, hook: HitPawHook) -> None:
    upload = hook.presign_upload("shoe.jpg", "image/jpeg")
    wrong = dataclasses.replace(upload, content_type="image/png")
    data = sample(hitpaw_emulator, "shoe.jpg")
    with pytest.raises(HitPawAuthenticationError) as excinfo:
        hook.upload(wrong, data)
    assert excinfo.value.http_status == 403
    assert "Signature" not in str(excinfo.value)  # the signed query is not quoted
    assert requests.get(upload.access_url, timeout=10).status_code == 404
    assert hitpaw_emulator.state()["uploads"] == 0


def test_tampered_signature_is_refused(hitpaw_emulator: Any, hook: HitPawHook) -> None:
    upload = hook.presign_upload("shoe.jpg", "image/jpeg")
    tampered = dataclasses.replace(upload, upload_url=upload.upload_url[:-4] + "0000")
    with pytest.raises(HitPawAuthenticationError):
        hook.upload(tampered, sample(hitpaw_emulator, "shoe.jpg"))


def test_presign_with_a_bad_key(hitpaw_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_HITPAW_BAD",
        json.dumps({"conn_type": "hitpaw", "host": hitpaw_emulator.base_url, "password": "not-a-key"}),
    )
    with (
        HitPawHook("hitpaw_bad", retry_policy=FAST_RETRIES) as hook,
        pytest.raises(HitPawAuthenticationError),
    ):
        hook.presign_upload("a.jpg", "image/jpeg")
    assert requests_to(hitpaw_emulator, _api.PRESIGN_PATH) == 1


def test_presign_retries_a_server_fault(hitpaw_emulator: Any, hook: HitPawHook) -> None:
    hitpaw_emulator.set_faults([{"kind": "500", "first_n": 1, "paths": [_api.PRESIGN_PATH]}])
    upload = hook.presign_upload("a.png", "image/png")
    assert upload.content_type == "image/png"
    assert requests_to(hitpaw_emulator, _api.PRESIGN_PATH) == 2
