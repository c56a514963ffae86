"""The OSS pre-signed upload over real HTTP: presign, the signed PUT, the stored objects, the batch."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from tests.unit.emulator.client import _KEY, post, submit, wait_done

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


def presign(emu: HitPawEmulatorHandle, body: dict[str, Any], key: Any = _KEY) -> requests.Response:
    return post(emu, "/api/oss/presign-put", body, key=key)


def test_presign_upload_and_segment(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    image = requests.get(hitpaw_emulator.sample_url("portrait.png"), timeout=5).content
    before = time.time()  # the emulator's clock (this process's) read on either side of the request
    response = presign(hitpaw_emulator, {"filename": "me.png", "content_type": "image/png"})
    after = time.time()
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 0
    data = body["data"]
    assert set(data) == {"upload_url", "access_url", "object_key", "content_type", "expire_at"}
    assert data["content_type"] == "image/png"
    assert data["object_key"].startswith("uploads/")
    assert data["object_key"].endswith(".png")
    assert data["object_key"].split("/")[1:4] in [
        time.strftime("%Y/%m/%d", time.gmtime(t)).split("/") for t in (before, after)
    ]
    assert data["access_url"] == hitpaw_emulator.url(f"/oss/objects/{data['object_key']}")
    assert "Signature=" in data["upload_url"]
    assert "Expires=" in data["upload_url"]
    assert before + 3600 - 1 <= data["expire_at"] <= after + 3600

    assert requests.get(data["access_url"], timeout=5).status_code == 404
    put = requests.put(data["upload_url"], data=image, headers={"Content-Type": "image/png"}, timeout=5)
    assert put.status_code == 200, put.text
    fetched = requests.get(data["access_url"], timeout=5)
    assert fetched.content == image
    assert fetched.headers["Content-Type"] == "image/png"

    job_id = submit(hitpaw_emulator, data["access_url"])
    assert wait_done(hitpaw_emulator, job_id)["status"] == "COMPLETED"
    assert hitpaw_emulator.state()["uploads"] == 1


def test_upload_is_refused_without_the_signed_content_type_or_signature(
    hitpaw_emulator: HitPawEmulatorHandle,
) -> None:
    data = presign(hitpaw_emulator, {"filename": "a.jpg"}).json()["data"]
    assert data["content_type"] == "image/jpeg"
    url = data["upload_url"]
    for content_type in ("image/png", "application/octet-stream", ""):
        headers = {"Content-Type": content_type} if content_type else {}
        assert requests.put(url, data=b"x", headers=headers, timeout=5).status_code == 403
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert (
        requests.put(tampered, data=b"x", headers={"Content-Type": "image/jpeg"}, timeout=5).status_code
        == 403
    )
    other_expiry = url.replace(f"Expires={data['expire_at']}", f"Expires={data['expire_at'] + 100}")
    assert (
        requests.put(other_expiry, data=b"x", headers={"Content-Type": "image/jpeg"}, timeout=5).status_code
        == 403
    )
    unsigned = url.split("?")[0]
    assert (
        requests.put(unsigned, data=b"x", headers={"Content-Type": "image/jpeg"}, timeout=5).status_code
        == 403
    )
    assert requests.get(data["access_url"], timeout=5).status_code == 404


@pytest.mark.parametrize("ext", ["jpg", "jpeg", "png", "webp", "gif", "bmp", "JPG"])
def test_presign_allowed_extensions(hitpaw_emulator: HitPawEmulatorHandle, ext: str) -> None:
    response = presign(hitpaw_emulator, {"filename": f"f.{ext}"})
    assert response.status_code == 200
    expected = {"jpg": "image/jpeg", "jpeg": "image/jpeg"}.get(ext.lower(), f"image/{ext.lower()}")
    assert response.json()["data"]["content_type"] == expected


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"filename": ""},
        {"filename": 3},
        {"filename": "f.tiff"},
        {"filename": "noext"},
        {"filename": "f.jpg", "content_type": "image/png"},
        {"filename": "f.jpg", "expire_seconds": 59},
        {"filename": "f.jpg", "expire_seconds": 7201},
        {"filename": "f.jpg", "expire_seconds": "60"},
    ],
)
def test_presign_bad_requests(hitpaw_emulator: HitPawEmulatorHandle, body: dict[str, Any]) -> None:
    response = presign(hitpaw_emulator, body)
    assert response.status_code == 400
    assert response.json()["code"] == 400


@pytest.mark.parametrize("seconds", [60, 7200])
def test_presign_expiry_bounds(hitpaw_emulator: HitPawEmulatorHandle, seconds: int) -> None:
    before = time.time()
    data = presign(hitpaw_emulator, {"filename": "f.jpg", "expire_seconds": seconds}).json()["data"]
    after = time.time()
    assert before + seconds - 1 <= data["expire_at"] <= after + seconds  # whole seconds, rounded down


@pytest.mark.parametrize("state", ["expired", "no_access", None])
def test_presign_auth_is_http_401(hitpaw_emulator: HitPawEmulatorHandle, state: str | None) -> None:
    key = "wrong"
    if state:
        hitpaw_emulator.set_key(key, state)
    for path in ("/api/oss/presign-put", "/api/oss/presign-put/batch"):
        response = post(
            hitpaw_emulator, path, {"filename": "f.jpg", "files": [{"filename": "f.jpg"}]}, key=key
        )
        assert response.status_code == 401


def test_presign_batch(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    files = [{"filename": f"f{i}.png", "content_type": "image/png"} for i in range(19)] + [
        {"filename": "x.txt"}
    ]
    response = post(hitpaw_emulator, "/api/oss/presign-put/batch", {"files": files, "expire_seconds": 600})
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 0
    data = body["data"]
    assert (data["total"], data["success"], data["failed"]) == (20, 19, 1)
    assert len(data["items"]) == 20
    assert data["items"][-1]["error"].startswith("extension not allowed")
    good = data["items"][0]
    assert good["filename"] == "f0.png"
    assert {"upload_url", "access_url", "object_key", "content_type", "expire_at"} <= set(good)
    assert len({item["object_key"] for item in data["items"][:19]}) == 19
    put = requests.put(good["upload_url"], data=b"png?", headers={"Content-Type": "image/png"}, timeout=5)
    assert put.status_code == 200


@pytest.mark.parametrize("files", [[], [{"filename": "a.jpg"}] * 21, "a.jpg", None])
def test_presign_batch_size_limits(hitpaw_emulator: HitPawEmulatorHandle, files: Any) -> None:
    response = post(hitpaw_emulator, "/api/oss/presign-put/batch", {"files": files})
    assert response.status_code == 400
