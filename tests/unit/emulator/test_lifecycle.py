"""Starting and stopping: EmulatorServer, the command line, the pytest plugin, and clock-driven expiry."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import requests

from airflow_provider_hitpaw.emulator.__main__ import build_parser, main
from airflow_provider_hitpaw.emulator.server import Emulator, EmulatorConfig, EmulatorServer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


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


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# --- EmulatorServer


def test_start_and_stop_are_fast_and_leave_nothing_behind() -> None:
    threads = {t.ident for t in threading.enumerate()}
    started = time.monotonic()
    server = EmulatorServer(job_seconds=0.1, api_key="k")
    server.start()
    assert time.monotonic() - started < 1
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
        stopping = time.monotonic()
        server.stop()
        assert time.monotonic() - stopping < 1
    assert _refused(port)
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
        assert _refused(port)
        emu.up()
        assert not _refused(port)
        emu.reset()
        assert emu.state()["coins"] == 40
    assert _refused(port)
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
        deadline = time.monotonic() + 5
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


# --- clock-driven behaviour, without sleeping


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake_clock_emulator() -> Any:
    clock = FakeClock()
    emulator = Emulator(EmulatorConfig(api_key="k", job_seconds=3, result_ttl=8 * 86400), clock=clock)
    await emulator.start()
    try:
        yield emulator, clock
    finally:
        await emulator.stop()


async def test_eight_day_retention_and_upload_expiry(fake_clock_emulator: Any) -> None:
    emulator, clock = fake_clock_emulator
    base = emulator.internal_url
    headers = {"Apikey": "k"}
    async with aiohttp.ClientSession(headers=headers) as http:

        async def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post(base + path, json=body) as response:
                result: dict[str, Any] = await response.json()
                return result

        job_id = (await call("/api/image-segmentation", {"file_url": base + "/samples/shoe.jpg"}))["data"][
            "job_id"
        ]
        for _ in range(200):  # the real processing, on the real clock
            if emulator.jobs[job_id].processed_at is not None:
                break
            await asyncio.sleep(0.02)
        assert (await call("/api/task-status", {"job_id": job_id}))["data"]["status"] == "CONVERTING"
        clock.now += 3
        assert (await call("/api/task-status", {"job_id": job_id}))["data"]["status"] == "COMPLETED"
        clock.now += 8 * 86400 - 1
        assert (await call("/api/task-status", {"job_id": job_id}))["data"]["status"] == "COMPLETED"
        clock.now += 1
        assert (await call("/api/task-status", {"job_id": job_id}))["code"] == 100400002

        presign = (await call("/api/oss/presign-put", {"filename": "a.png", "expire_seconds": 60}))["data"]
        assert presign["expire_at"] == int(clock.now + 60)
        clock.now += 61
        async with http.put(presign["upload_url"], data=b"x", headers={"Content-Type": "image/png"}) as put:
            assert put.status == 403
            assert "expired" in (await put.json())["message"]
        presign = (await call("/api/oss/presign-put", {"filename": "a.png"}))["data"]
        async with http.put(presign["upload_url"], data=b"x", headers={"Content-Type": "image/png"}) as put:
            assert put.status == 200
        clock.now += 7 * 86400
        async with http.get(presign["access_url"]) as fetched:
            assert fetched.status == 404


# --- the command line


@pytest.fixture
def cli() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_hitpaw.emulator",
            "--port",
            "0",
            "--api-key",
            "very-secret-key-123",
            "--job-seconds",
            "0.1",
            "--coins",
            "40",
            "--fault",
            "500:first_n=1,paths=/api/task-status",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("HitPaw emulator listening on http://127.0.0.1:"), line
        yield proc, line.rsplit(" ", 1)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)  # also closes the pipes


def test_cli_serves_and_stops_on_sigterm(cli: tuple[subprocess.Popen[str], str]) -> None:
    proc, base = cli
    assert not base.endswith(":0")
    headers = {"Apikey": "very-secret-key-123"}
    assert (
        requests.post(base + "/api/task-status", json={"job_id": "x"}, headers=headers, timeout=5).status_code
        == 500
    )
    assert (
        requests.post(base + "/api/task-status", json={"job_id": "x"}, headers=headers, timeout=5).status_code
        == 400
    )
    state = requests.get(base + "/_emulator/state", timeout=5).json()
    assert state["coins"] == 40
    assert state["config"]["job_seconds"] == 0.1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert proc.stderr is not None
    logs = proc.stderr.read()
    assert "POST /api/task-status" in logs
    assert "very-secret-key-123" not in logs


def test_cli_stops_on_sigint(cli: tuple[subprocess.Popen[str], str]) -> None:
    proc, _ = cli
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=5) == 0


def test_cli_help_documents_faults() -> None:
    text = build_parser().format_help()
    for word in ("--fault", "first_n", "share", "retry_after", "after_commit", "503_html", "--public-url"):
        assert word in text


def test_cli_rejects_a_bad_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--fault", "teapot"])
    assert exc.value.code == 2
    assert "unknown fault kind" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "hitpaw-emulator"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30, check=True)
    assert "HitPaw" in out.stdout


# --- the pytest plugin


def test_plugin_imports_nothing_heavy() -> None:
    code = (
        "import sys, airflow_provider_hitpaw.emulator.pytest_plugin\n"
        "heavy = [m for m in ('aiohttp', 'PIL', 'numpy', 'airflow', 'requests') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


def test_fixture(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    assert hitpaw_emulator.conn_id == "hitpaw_default"
    assert hitpaw_emulator.api_key.startswith("emu-key-")
    conn = json.loads(os.environ["AIRFLOW_CONN_HITPAW_DEFAULT"])
    assert conn == {
        "conn_type": "hitpaw",
        "host": hitpaw_emulator.base_url,
        "password": hitpaw_emulator.api_key,
    }
    response = requests.post(
        conn["host"] + "/api/task-status",
        json={"job_id": "x"},
        headers={"Apikey": conn["password"]},
        timeout=5,
    )
    assert response.json()["code"] == 100400002
    hitpaw_emulator.configure(coins=0)
    hitpaw_emulator.set_faults(["500"])


def test_fixture_resets_between_tests(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    state = hitpaw_emulator.state()
    assert state["coins"] == 100_000
    assert state["faults"] == []
    assert state["config"]["job_seconds"] == 0.2
