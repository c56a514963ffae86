"""The emulated HitPaw API over real HTTP on 127.0.0.1, driven with plain ``requests`` like an outside client.

The server is the ``hitpaw_emulator`` fixture of this package's own pytest plugin (jobs last 0.2 s).
"""

from __future__ import annotations

import io
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
import requests
from PIL import Image

from tests.unit.emulator.client import assert_error, eventually, post, status, submit, wait_done

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


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


class SteppedClock:
    """The emulator's clock, moved by the test only."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_status_stays_converting_for_job_seconds(
    hitpaw_emulator: HitPawEmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = hitpaw_emulator.server._emulator.state  # type: ignore[union-attr]
    clock = SteppedClock()
    monkeypatch.setattr(state, "clock", clock)
    hitpaw_emulator.configure(job_seconds=0.6)
    job_id = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    eventually(lambda: state.jobs[job_id].processed_at is not None, "the image to be processed")
    clock.now += 0.599  # processed, but the job's time is not over
    assert status(hitpaw_emulator, job_id)["status"] == "CONVERTING"
    assert requests.get(hitpaw_emulator.url(f"/results/{job_id}/cutout.png"), timeout=5).status_code == 404
    clock.now += 0.001
    assert status(hitpaw_emulator, job_id)["status"] == "COMPLETED"
    job = hitpaw_emulator.state()["jobs"][0]
    assert job["finished_at"] - job["submitted_at"] == pytest.approx(0.6)


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


def test_result_file_names_are_fixed(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    job_id = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    wait_done(hitpaw_emulator, job_id)
    assert requests.get(hitpaw_emulator.url(f"/results/{job_id}/other.png"), timeout=5).status_code == 404
