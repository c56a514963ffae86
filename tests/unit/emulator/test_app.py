"""The application and its listeners: samples, down/up on the same port, connection counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests

from tests.unit.emulator.client import STATUS, SUBMIT, eventually, post, refused, submit_body

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


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


def test_down_refuses_connections_then_comes_back(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    port = hitpaw_emulator.server.port
    with requests.Session() as session:  # a kept-alive connection is cut as well
        session.headers["Apikey"] = hitpaw_emulator.api_key
        assert session.post(hitpaw_emulator.url(STATUS), json={"job_id": "x"}, timeout=5).status_code == 400
        hitpaw_emulator.down(3600)  # longer than the test: no check below races the end of the outage
        assert refused(port)
        with pytest.raises(requests.ConnectionError):
            session.post(hitpaw_emulator.url(STATUS), json={"job_id": "x"}, timeout=5)
        assert hitpaw_emulator.state()["listening"] is False
        hitpaw_emulator.down(0.1)  # a new outage replaces the first one, and ends by itself
        eventually(lambda: not refused(port), "listening again after the outage")
        assert session.post(hitpaw_emulator.url(STATUS), json={"job_id": "x"}, timeout=5).status_code == 400
    assert hitpaw_emulator.server.port == port


def test_jobs_keep_running_while_down(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    job = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).json()["data"]["job_id"]
    hitpaw_emulator.down(3600)

    def completed() -> bool:
        (snapshot,) = hitpaw_emulator.state()["jobs"]  # the control helpers work while down
        return bool(snapshot["status"] == "COMPLETED")

    eventually(completed, "the job to complete while the emulator is down")
    assert hitpaw_emulator.state()["listening"] is False  # it completed while down, not after
    hitpaw_emulator.up()
    data = post(hitpaw_emulator, STATUS, {"job_id": job}).json()["data"]
    assert data["status"] == "COMPLETED"


def test_connection_counts(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    with requests.Session() as session:
        session.headers["Apikey"] = hitpaw_emulator.api_key
        for _ in range(3):
            session.post(hitpaw_emulator.url(STATUS), json={"job_id": "x"}, timeout=5)
        assert hitpaw_emulator.state()["connections"] == {"accepted": 1, "open": 1}
    for _ in range(2):
        post(hitpaw_emulator, STATUS, {"job_id": "x"})
    # The server notices a closed connection a moment after the client closed it.
    eventually(lambda: not hitpaw_emulator.state()["connections"]["open"], "the connections to close")
    assert hitpaw_emulator.state()["connections"] == {"accepted": 3, "open": 0}


def test_own_fetches_do_not_count_as_client_connections(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    with requests.Session() as session:
        session.headers["Apikey"] = hitpaw_emulator.api_key
        job = session.post(hitpaw_emulator.url(SUBMIT), json=submit_body(hitpaw_emulator), timeout=5)
        job_id = job.json()["data"]["job_id"]

        def done() -> bool:
            answer = session.post(hitpaw_emulator.url(STATUS), json={"job_id": job_id}, timeout=5)
            return bool(answer.json()["data"]["status"] != "CONVERTING")

        eventually(done, "the job to end")
        state = hitpaw_emulator.state()
    assert state["connections"]["accepted"] == 1
    assert state["requests"]["/samples/{name}"] == 1  # but the fetch itself is seen
