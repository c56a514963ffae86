"""EmulatorServer: the emulator in a background thread, started and stopped leaving nothing behind, and
its optional TLS listener (``EmulatorServer(ssl_context=...)``)."""

from __future__ import annotations

import gc
import socket
import threading
import time

import pytest
import requests

from airflow_provider_hitpaw.emulator.server import EmulatorServer
from tests.conftest import TLSFiles
from tests.unit.emulator.client import PATIENCE, refused


def _emulator_sockets(public_port: int, internal_port: int) -> list[socket.socket]:
    """Open sockets that belong to the emulator: its listeners, accepted connections and own fetches.

    Sockets of the test's own HTTP client are not the emulator's business and are left out.
    """
    found = []
    gc.collect()
    for obj in gc.get_objects():
        try:
            is_open_socket = isinstance(obj, socket.socket) and obj.fileno() >= 0
        except Exception:  # a lazy object (Airflow 2 has some) may fail even isinstance
            continue
        if is_open_socket:
            try:
                local = obj.getsockname()
                remote = obj.getpeername() if obj.type == socket.SOCK_STREAM else None
            except OSError:
                remote = None
            if (isinstance(local, tuple) and local[1] in (public_port, internal_port)) or (
                isinstance(remote, tuple) and remote[1] == internal_port
            ):
                found.append(obj)
    return found


def test_start_and_stop_leave_nothing_behind() -> None:
    """start() returns once requests are served; stop() does not wait for the kept-alive connection or the
    job in progress (its thread would outlive it: stop waits 10 s for it at most). How long either takes
    is not asserted here: that depends on the machine."""
    threads = {t.ident for t in threading.enumerate()}
    server = EmulatorServer(job_seconds=0.1, api_key="k")
    server.start()
    port = server.port
    internal_port = server._emulator._internal_port  # type: ignore[union-attr]
    assert server.base_url == f"http://127.0.0.1:{port}"
    headers = {"Apikey": "k"}
    with requests.Session() as session:  # leaves a kept-alive connection open at stop time
        response = session.post(server.url("/api/task-status"), json={"job_id": "x"}, headers=headers)
        assert response.json()["code"] == 100400002
        job = session.post(
            server.url("/api/image-segmentation"), json={"file_url": server.sample_url()}, headers=headers
        )
        assert job.status_code == 200  # and a job still in progress
        assert _emulator_sockets(port, internal_port)
        server.stop()
    assert refused(port)
    assert {t.ident for t in threading.enumerate()} <= threads
    assert _emulator_sockets(port, internal_port) == []
    server.stop()  # idempotent


def test_context_manager_and_helpers() -> None:
    with EmulatorServer(job_seconds=0.05, coins=40) as emu:
        port = emu.port
        assert emu.api_key.startswith("emu-key-")
        assert emu.state()["coins"] == 40
        emu.set_faults(["500:first_n=1"])
        response = requests.post(
            emu.url("api/task-status"), json={}, headers={"Apikey": emu.api_key}, timeout=5
        )
        assert response.status_code == 500
        emu.clear_faults()
        emu.configure(coins=7)
        assert emu.state()["coins"] == 7
        emu.down(10)
        assert refused(port)
        emu.up()
        assert not refused(port)
        emu.reset()
        assert emu.state()["coins"] == 40
    assert refused(port)
    with pytest.raises(RuntimeError, match="not running"):
        _ = emu.base_url


def test_startup_faults_come_back_on_reset() -> None:
    with EmulatorServer(faults=["429:first_n=1"], api_key="k") as emu:

        def post() -> int:
            headers = {"Apikey": "k"}
            return requests.post(
                emu.url("/api/task-status"), json={"job_id": "x"}, headers=headers, timeout=5
            ).status_code

        assert [post(), post()] == [429, 400]
        emu.reset()
        assert post() == 429


def test_start_failure_is_reported() -> None:
    with EmulatorServer() as first, pytest.raises(RuntimeError, match="did not start"):
        EmulatorServer(port=first.port).start()


def test_public_url_is_used_in_urls_and_own_urls_are_still_fetched() -> None:
    public = "http://emulator.invalid:9999"  # never resolved: the emulator maps it to itself
    with EmulatorServer(public_url=public + "/", job_seconds=0.05, api_key="k") as emu:
        assert emu.public_url == public
        assert emu.base_url == f"http://127.0.0.1:{emu.port}"
        headers = {"Apikey": "k"}
        sample = public + "/samples/shoe.jpg"
        job_id = requests.post(
            emu.url("/api/image-segmentation"), json={"file_url": sample}, headers=headers, timeout=5
        ).json()["data"]["job_id"]
        deadline = time.monotonic() + PATIENCE
        while True:
            data = requests.post(
                emu.url("/api/task-status"), json={"job_id": job_id}, headers=headers, timeout=5
            ).json()["data"]
            if data["status"] != "CONVERTING" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert data["status"] == "COMPLETED"
        assert data["res_url"] == f"{public}/results/{job_id}/cutout.png"
        listing = requests.get(emu.url("/samples/"), timeout=5).json()["samples"]
        assert listing[0]["url"].startswith(f"{public}/samples/")
        upload = requests.post(
            emu.url("/api/oss/presign-put"), json={"filename": "a.png"}, headers=headers, timeout=5
        )
        assert upload.json()["data"]["upload_url"].startswith(f"{public}/oss/upload/uploads/")


# --- TLS ------------------------------------------------------------------------------------------------


def test_server_serves_https_with_a_context(tls_files: TLSFiles) -> None:
    with EmulatorServer(job_seconds=0.05, ssl_context=tls_files.server_context()) as emu:
        assert emu.base_url.startswith("https://127.0.0.1:")
        answer = requests.post(
            emu.url("/api/image-segmentation"),
            json={"file_url": emu.sample_url("shoe.jpg")},
            headers={"Apikey": emu.api_key},
            verify=tls_files.ca_cert,
            timeout=10,
        )
        assert answer.json()["code"] == 200
        # The job fetches its https sample URL through the private plain listener: it completes.
        job_id = answer.json()["data"]["job_id"]
        for _ in range(100):
            status = requests.post(
                emu.url("/api/task-status"),
                json={"job_id": job_id},
                headers={"Apikey": emu.api_key},
                verify=tls_files.ca_cert,
                timeout=10,
            ).json()["data"]
            if status["status"] != "CONVERTING":
                break
            time.sleep(0.02)
        assert status["status"] == "COMPLETED"
        assert status["res_url"].startswith(emu.base_url)
        # Plain http on the TLS port gets no answer.
        with pytest.raises(requests.ConnectionError):
            requests.get(emu.base_url.replace("https://", "http://") + "/samples/", timeout=5)


def test_server_refuses_clients_that_do_not_trust_its_ca(tls_files: TLSFiles) -> None:
    with (
        EmulatorServer(ssl_context=tls_files.server_context()) as emu,
        pytest.raises(requests.exceptions.SSLError),
    ):
        requests.get(emu.url("/samples/"), timeout=5, verify=True)


def test_without_a_context_the_server_stays_plain_http() -> None:
    with EmulatorServer() as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert requests.get(emu.url("/samples/"), timeout=5).status_code == 200
