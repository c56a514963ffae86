"""The emulated HitPaw API over real HTTP on 127.0.0.1, driven with plain ``requests`` like an outside client.

The server is the ``hitpaw_emulator`` fixture of this package's own pytest plugin (jobs last 0.2 s).
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import requests
from PIL import Image

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle

_KEY = object()


def post(
    emu: HitPawEmulatorHandle, path: str, body: Any = None, *, key: Any = _KEY, data: bytes | None = None
) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if key is _KEY:
        headers["Apikey"] = emu.api_key
    elif key is not None:
        headers["Apikey"] = key
    if data is not None:
        return requests.post(emu.url(path), data=data, headers=headers, timeout=5)
    return requests.post(emu.url(path), json=body, headers=headers, timeout=5)


def submit(emu: HitPawEmulatorHandle, file_url: str) -> str:
    response = post(emu, "/api/image-segmentation", {"file_url": file_url})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 200
    assert body["message"] == "OK"
    assert body["data"]["consume_coins"] == 20
    job_id: str = body["data"]["job_id"]
    return job_id


def status(emu: HitPawEmulatorHandle, job_id: str) -> dict[str, Any]:
    response = post(emu, "/api/task-status", {"job_id": job_id})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 200
    data: dict[str, Any] = body["data"]
    return data


def wait_done(emu: HitPawEmulatorHandle, job_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = status(emu, job_id)
        if data["status"] != "CONVERTING":
            return data
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still CONVERTING after {timeout} s")


def assert_error(response: requests.Response, http: int, code: int, message: str) -> None:
    assert response.status_code == http, response.text
    assert response.json() == {"code": code, "message": message, "data": {}}


# --- every error code of the table, with its HTTP status and message


def test_missing_key(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    response = post(hitpaw_emulator, "/api/image-segmentation", {"file_url": "http://x/y.jpg"}, key=None)
    assert_error(response, 400, 110400000, "api_key is not valid")


@pytest.mark.parametrize("path", ["/api/image-segmentation", "/api/task-status"])
def test_wrong_key(hitpaw_emulator: HitPawEmulatorHandle, path: str) -> None:
    response = post(hitpaw_emulator, path, {"file_url": "http://x/y.jpg", "job_id": "x"}, key="nope")
    assert_error(response, 400, 110400000, "api_key is not valid")


def test_key_is_checked_before_the_body(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    response = post(hitpaw_emulator, "/api/image-segmentation", data=b"{not json", key="nope")
    assert_error(response, 400, 110400000, "api_key is not valid")


def test_expired_key(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_key("old-key", "expired")
    response = post(hitpaw_emulator, "/api/task-status", {"job_id": "x"}, key="old-key")
    assert_error(response, 401, 100401000, "Token is expired")


def test_no_access_key_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    ctl = requests.post(
        hitpaw_emulator.url("/_emulator/keys"), json={"key": "k2", "state": "no_access"}, timeout=5
    )
    assert ctl.status_code == 200
    response = post(hitpaw_emulator, "/api/image-segmentation", {"file_url": "http://x/y.jpg"}, key="k2")
    assert_error(response, 400, 100400000, "No access")
    bad = requests.post(hitpaw_emulator.url("/_emulator/keys"), json={"key": "k", "state": "?"}, timeout=5)
    assert bad.status_code == 400


def test_revoking_a_key(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_key(hitpaw_emulator.api_key, "invalid")
    response = post(hitpaw_emulator, "/api/task-status", {"job_id": "x"})
    assert_error(response, 400, 110400000, "api_key is not valid")


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'"file_url"', b"{}", b'{"file_url": 42}', b'{"file_url": null}', b""],
)
def test_bad_request_on_submit(hitpaw_emulator: HitPawEmulatorHandle, body: bytes) -> None:
    response = post(hitpaw_emulator, "/api/image-segmentation", data=body)
    assert_error(response, 400, 100400002, "Bad Request")


@pytest.mark.parametrize("body", [b"{not json", b"{}", b'{"job_id": 1}'])
def test_bad_request_on_status(hitpaw_emulator: HitPawEmulatorHandle, body: bytes) -> None:
    assert_error(post(hitpaw_emulator, "/api/task-status", data=body), 400, 100400002, "Bad Request")


def test_unknown_job_is_bad_request(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    response = post(hitpaw_emulator, "/api/task-status", {"job_id": "f5007c0b-e902-4070-8c75-f337d896168f"})
    assert_error(response, 400, 100400002, "Bad Request")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "ftp://example.com/a.jpg",
        "file:///etc/passwd",
        "http://",
        "http:///a.jpg",
        "https://exa mple.com/a.jpg",
        "http://host:notaport/a.jpg",
        "http://example.com/" + "a" * 2048,
    ],
)
def test_invalid_url(hitpaw_emulator: HitPawEmulatorHandle, url: str) -> None:
    response = post(hitpaw_emulator, "/api/image-segmentation", {"file_url": url})
    assert_error(response, 400, 100400001, "Invalid URL")
    assert hitpaw_emulator.state()["coins"] == 100_000


def test_url_of_exactly_2048_characters_is_accepted(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    url = "http://127.0.0.1:1/"
    submit(hitpaw_emulator, url + "a" * (2048 - len(url)))


def test_coins_are_charged_and_run_out(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.configure(coins=45)
    url = hitpaw_emulator.sample_url("broken.jpg")
    submit(hitpaw_emulator, url)
    submit(hitpaw_emulator, url)
    assert hitpaw_emulator.state()["coins"] == 5
    response = post(hitpaw_emulator, "/api/image-segmentation", {"file_url": url})
    assert_error(response, 402, 110402000, "The coins are not enough")
    state = hitpaw_emulator.state()
    assert state["coins"] == 5
    assert len(state["jobs"]) == 2


def test_coins_default_balance_and_reset(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    submit(hitpaw_emulator, hitpaw_emulator.sample_url("broken.jpg"))
    assert hitpaw_emulator.state()["coins"] == 100_000 - 20
    hitpaw_emulator.reset()
    assert hitpaw_emulator.state()["coins"] == 100_000
    assert hitpaw_emulator.state()["jobs"] == []


def test_rate_limit_and_internal_error_codes(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["429:first_n=1", "500:first_n=1"])
    assert_error(
        post(hitpaw_emulator, "/api/task-status", {"job_id": "x"}), 429, 100429000, "Too Many Requests"
    )
    assert_error(post(hitpaw_emulator, "/api/task-status", {"job_id": "x"}), 500, 100500000, "Internal error")


# --- jobs


def test_full_job_on_every_good_sample(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    listing = requests.get(hitpaw_emulator.url("/samples/"), timeout=5).json()["samples"]
    good = [s for s in listing if s["expected_status"] == "COMPLETED"]
    assert {"shoe.jpg", "portrait.png", "product.webp", "mug.jpg"} <= {s["name"] for s in good}
    jobs = {submit(hitpaw_emulator, s["url"]): s for s in good}

    first = status(hitpaw_emulator, next(iter(jobs)))
    assert first["status"] == "CONVERTING"
    assert first["res_url"] == first["mask_url"] == ""

    for job_id, sample in jobs.items():
        data = wait_done(hitpaw_emulator, job_id)
        assert data["status"] == "COMPLETED", sample["name"]
        assert data["job_id"] == job_id
        assert data["original_url"] == sample["url"]
        assert data["res_url"].startswith(hitpaw_emulator.base_url)

        cutout = Image.open(io.BytesIO(requests.get(data["res_url"], timeout=5).content))
        mask = Image.open(io.BytesIO(requests.get(data["mask_url"], timeout=5).content))
        assert cutout.format == mask.format == "PNG"
        assert cutout.mode == "RGBA"
        assert mask.mode == "L"
        assert cutout.size == mask.size == (sample["width"], sample["height"])
        pixels = np.asarray(mask)
        assert set(np.unique(pixels)) == {0, 255}
        subject = int((pixels == 255).sum())
        assert 0.9 < subject / sample["subject_pixels"] < 1.1, sample["name"]
        assert (np.asarray(cutout)[..., 3] == pixels).all()

    assert hitpaw_emulator.state()["coins"] == 100_000 - 20 * len(jobs)


def test_status_stays_converting_for_job_seconds(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.configure(job_seconds=0.6)
    started = time.monotonic()
    job_id = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    time.sleep(0.3)
    assert status(hitpaw_emulator, job_id)["status"] == "CONVERTING"
    assert requests.get(hitpaw_emulator.url(f"/results/{job_id}/cutout.png"), timeout=5).status_code == 404
    assert wait_done(hitpaw_emulator, job_id)["status"] == "COMPLETED"
    assert time.monotonic() - started >= 0.6
    job = hitpaw_emulator.state()["jobs"][0]
    assert job["finished_at"] - job["submitted_at"] == pytest.approx(0.6, abs=0.05)


@pytest.mark.parametrize("name", ["broken.jpg", "drawing.gif", "missing.jpg"])
def test_bad_image_ends_in_error(hitpaw_emulator: HitPawEmulatorHandle, name: str) -> None:
    job_id = submit(hitpaw_emulator, hitpaw_emulator.sample_url(name))
    data = wait_done(hitpaw_emulator, job_id)
    assert data["status"] == "ERROR"
    assert data["res_url"] == data["mask_url"] == ""
    assert data["original_url"] == hitpaw_emulator.sample_url(name)
    assert requests.get(hitpaw_emulator.url(f"/results/{job_id}/mask.png"), timeout=5).status_code == 404
    assert hitpaw_emulator.state()["jobs"][0]["error"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:1/x.jpg",  # connection refused
        "http://192.0.2.1/x.jpg",  # not loopback: refused by policy, nothing leaves the machine
        "https://localhost:1/x.jpg",
    ],
)
def test_unreachable_url_ends_in_error(hitpaw_emulator: HitPawEmulatorHandle, url: str) -> None:
    assert wait_done(hitpaw_emulator, submit(hitpaw_emulator, url))["status"] == "ERROR"


def test_format_is_recognised_by_content_not_name(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    job_id = submit(hitpaw_emulator, hitpaw_emulator.sample_url("disguised.png"))
    assert wait_done(hitpaw_emulator, job_id)["status"] == "COMPLETED"


def test_force_error_and_fail_job(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.configure(force_error=True)
    forced = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    hitpaw_emulator.configure(force_error=False)
    failed = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    assert hitpaw_emulator.fail_job(failed)
    ok = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    assert wait_done(hitpaw_emulator, forced)["status"] == "ERROR"
    assert wait_done(hitpaw_emulator, failed)["status"] == "ERROR"
    assert wait_done(hitpaw_emulator, ok)["status"] == "COMPLETED"
    assert not hitpaw_emulator.fail_job("nope")


def test_results_expire_after_the_ttl(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.configure(result_ttl=0.4)
    job_id = submit(hitpaw_emulator, hitpaw_emulator.sample_url("mug.jpg"))
    data = wait_done(hitpaw_emulator, job_id)
    assert requests.get(data["mask_url"], timeout=5).status_code == 200
    time.sleep(0.5)
    assert_error(post(hitpaw_emulator, "/api/task-status", {"job_id": job_id}), 400, 100400002, "Bad Request")
    assert requests.get(data["mask_url"], timeout=5).status_code == 404
    assert requests.get(data["res_url"], timeout=5).status_code == 404
    assert hitpaw_emulator.state()["jobs"] == []


def test_expire_one_job_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    keep = submit(hitpaw_emulator, hitpaw_emulator.sample_url("broken.jpg"))
    gone = submit(hitpaw_emulator, hitpaw_emulator.sample_url("broken.jpg"))
    response = requests.post(hitpaw_emulator.url(f"/_emulator/jobs/{gone}/expire"), timeout=5)
    assert response.status_code == 200
    assert requests.post(hitpaw_emulator.url("/_emulator/jobs/nope/expire"), timeout=5).status_code == 404
    assert_error(post(hitpaw_emulator, "/api/task-status", {"job_id": gone}), 400, 100400002, "Bad Request")
    assert status(hitpaw_emulator, keep)["job_id"] == keep


def test_result_file_names_are_fixed(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    job_id = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    wait_done(hitpaw_emulator, job_id)
    assert requests.get(hitpaw_emulator.url(f"/results/{job_id}/other.png"), timeout=5).status_code == 404


# --- samples


def test_samples_listing_and_files(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    listing = requests.get(hitpaw_emulator.url("/samples/"), timeout=5).json()["samples"]
    names = {s["name"] for s in listing}
    assert {"shoe.jpg", "portrait.png", "product.webp", "mug.jpg", "broken.jpg"} <= names
    for sample in listing:
        response = requests.get(sample["url"], timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Type"] == sample["content_type"]
        assert len(response.content) == sample["bytes"]
    assert requests.get(hitpaw_emulator.url("/samples/nope.jpg"), timeout=5).status_code == 404


# --- OSS pre-signed upload


def presign(emu: HitPawEmulatorHandle, body: dict[str, Any], key: Any = _KEY) -> requests.Response:
    return post(emu, "/api/oss/presign-put", body, key=key)


def test_presign_upload_and_segment(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    image = requests.get(hitpaw_emulator.sample_url("portrait.png"), timeout=5).content
    response = presign(hitpaw_emulator, {"filename": "me.png", "content_type": "image/png"})
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 0
    data = body["data"]
    assert set(data) == {"upload_url", "access_url", "object_key", "content_type", "expire_at"}
    assert data["content_type"] == "image/png"
    assert data["object_key"].startswith("uploads/")
    assert data["object_key"].endswith(".png")
    assert time.strftime("%Y/%m/%d", time.gmtime()) in data["object_key"]
    assert data["access_url"] == hitpaw_emulator.url(f"/oss/objects/{data['object_key']}")
    assert "Signature=" in data["upload_url"]
    assert "Expires=" in data["upload_url"]
    assert abs(data["expire_at"] - (time.time() + 3600)) < 5

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
    data = presign(hitpaw_emulator, {"filename": "f.jpg", "expire_seconds": seconds}).json()["data"]
    assert abs(data["expire_at"] - (time.time() + seconds)) < 5


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
