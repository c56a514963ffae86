"""A client written only from ../shared/hitpaw-api.md, with plain requests and the documented JSON and
nothing from the provider, completes a job on the emulator: the emulator speaks the documented API."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_hitpaw.emulator.startup import parse_startup_line

KEY = "minimal-client-key-42"


@pytest.fixture(scope="module")
def emulator_url() -> Iterator[str]:
    """The emulator as a user starts it: the console command, in its own process."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_hitpaw.emulator",
            "--port",
            "0",
            "--api-key",
            KEY,
            "--job-seconds",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("HitPaw emulator listening on http://127.0.0.1:"), line
        yield parse_startup_line(line).base_url
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_documented_flow_submit_poll_download(emulator_url: str) -> None:
    headers = {"Content-Type": "application/json", "Apikey": KEY}
    image = f"{emulator_url}/samples/shoe.jpg"

    answer = requests.post(
        f"{emulator_url}/api/image-segmentation", json={"file_url": image}, headers=headers, timeout=10
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["code"] == 200
    job_id = body["data"]["job_id"]
    assert body["data"]["consume_coins"] == 20

    deadline = time.monotonic() + 30
    while True:
        status = requests.post(
            f"{emulator_url}/api/task-status", json={"job_id": job_id}, headers=headers, timeout=10
        )
        data = status.json()["data"]
        assert data["job_id"] == job_id
        assert data["status"] in ("CONVERTING", "COMPLETED")
        if data["status"] == "COMPLETED":
            break
        assert time.monotonic() < deadline
        time.sleep(2)  # the documented cadence: every 2 to 5 seconds

    assert data["original_url"] == image
    for url in (data["res_url"], data["mask_url"]):
        png = requests.get(url, timeout=10)
        assert png.status_code == 200
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_documented_error_envelope_for_a_wrong_key(emulator_url: str) -> None:
    answer = requests.post(
        f"{emulator_url}/api/task-status",
        json={"job_id": "x"},
        headers={"Content-Type": "application/json", "Apikey": "wrong"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["code"] == 110400000
    assert answer.json()["message"] == "api_key is not valid"
