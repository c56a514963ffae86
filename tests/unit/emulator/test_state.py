"""The state's rules: retention, charging, settings, keys (with an injectable clock, without sleeping)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from airflow_provider_hitpaw.emulator.server import Emulator, EmulatorConfig
from airflow_provider_hitpaw.emulator.state import EmulatorState
from tests.unit.fakes import FakeClock


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
            if emulator.state.jobs[job_id].processed_at is not None:
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


# --- the rules, without HTTP


def make_state(clock: FakeClock, coins: int = 45) -> EmulatorState:
    return EmulatorState(api_key="k", coins=coins, job_seconds=3, result_ttl=60, clock=clock)


def test_a_job_is_charged_at_creation_and_refused_without_coins() -> None:
    clock = FakeClock()
    state = make_state(clock)
    first = state.create_job("http://127.0.0.1/a.jpg")
    second = state.create_job("http://127.0.0.1/a.jpg")
    assert first is not None
    assert second is not None
    assert first.job_id != second.job_id
    assert state.coins == 5
    assert state.create_job("http://127.0.0.1/a.jpg") is None
    assert state.coins == 5
    assert len(state.jobs) == 2
    assert first.status(clock.now) == "CONVERTING"
    assert first.ready_at == clock.now + 3


def test_a_job_is_converting_until_both_its_time_and_its_processing_are_done() -> None:
    clock = FakeClock()
    state = make_state(clock)
    job = state.create_job("http://127.0.0.1/a.jpg")
    assert job is not None
    clock.now += 5
    assert job.status(clock.now) == "CONVERTING"  # not processed yet
    job.processed_at = clock.now
    assert job.status(clock.now) == "ERROR"  # processed without a result
    assert job.finished_at == clock.now
    clock.now += 59
    state.sweep()
    assert job.job_id in state.jobs
    clock.now += 1
    state.sweep()
    assert state.jobs == {}


def test_settings_are_validated_and_reset_restores_them() -> None:
    state = make_state(FakeClock())
    for bad in ({"coins": -1}, {"coins": 1.5}, {"coins": True}, {"job_seconds": -1}, {"force_error": 1}):
        with pytest.raises(ValueError, match="must be"):
            state.configure(**bad)
    with pytest.raises(ValueError, match="unknown settings"):
        state.configure(colour=1)
    state.configure(coins=7, job_seconds=1, result_ttl=2, force_error=True)
    assert state.coins == 7
    assert state.settings() == {"job_seconds": 1.0, "result_ttl": 2.0, "force_error": True}
    state.set_key("other", "expired")
    state.reset()
    assert state.coins == 45
    assert state.settings() == {"job_seconds": 3, "result_ttl": 60, "force_error": False}
    assert state.keys == {"k": "valid"}


def test_keys() -> None:
    state = make_state(FakeClock())
    state.set_key("a", "no_access")
    assert state.key_state("a") == "no_access"
    assert state.key_state("") is None
    state.set_key("k", "invalid")
    assert state.key_state("k") is None
    with pytest.raises(ValueError, match="key state"):
        state.set_key("a", "revoked")
    with pytest.raises(ValueError, match="non-empty"):
        state.set_key("", "valid")
