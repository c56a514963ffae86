"""A plain ``requests`` client for the emulator, as an outside program talks to it (shared by the tests),
and what the tests use to wait for it, or to see its waits, without betting on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle

#: How long a test waits, at most, for what the emulator does on its own (a job, a closed connection):
#: only bounds how long a broken emulator takes to fail a test; a working one never comes near it.
PATIENCE = 30.0

SUBMIT = "/api/image-segmentation"
STATUS = "/api/task-status"

_KEY = object()


def post(
    emu: HitPawEmulatorHandle,
    path: str,
    body: Any = None,
    *,
    key: Any = _KEY,
    data: bytes | None = None,
    timeout: float = 5,
) -> requests.Response:
    """POST to the API with the valid key (or ``key``; None sends none), a JSON body or raw ``data``."""
    headers = {"Content-Type": "application/json"}
    if key is _KEY:
        headers["Apikey"] = emu.api_key
    elif key is not None:
        headers["Apikey"] = key
    if data is not None:
        return requests.post(emu.url(path), data=data, headers=headers, timeout=timeout)
    return requests.post(emu.url(path), json=body, headers=headers, timeout=timeout)


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


def wait_done(emu: HitPawEmulatorHandle, job_id: str, timeout: float = PATIENCE) -> dict[str, Any]:
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


def submit_body(emu: HitPawEmulatorHandle) -> dict[str, str]:
    return {"file_url": emu.sample_url("shoe.jpg")}


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def control(emu: HitPawEmulatorHandle, method: str, path: str, **kwargs: Any) -> requests.Response:
    """A request to the control endpoint with this run's token (extra ``headers`` are added to it)."""
    headers = {**emu.control_headers(), **kwargs.pop("headers", {})}
    return requests.request(method, emu.url(path), headers=headers, timeout=5, **kwargs)


def eventually(check: Callable[[], object], what: str, within: float = PATIENCE) -> None:
    """Wait until ``check()`` is true; fails naming ``what`` if it is not within ``within`` seconds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {within:g} s"
        time.sleep(0.02)


class RecordedSleeps:
    """Stands in for ``asyncio`` in one emulator module (``monkeypatch.setattr(module, "asyncio", ...)``):
    its sleeps are noted in :attr:`delays` instead of waited; everything else is asyncio's own.

    What a fault waits is then read, not timed: a test of it no longer depends on how busy the machine is.
    """

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result: Any = None) -> Any:
        self.delays.append(delay)
        return await asyncio.sleep(0, result)
