"""Both hooks, and the trigger, against a real HitPaw emulator on 127.0.0.1 (the pytest plugin's fixture)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawError,
    HitPawInsufficientCoinsError,
    HitPawInvalidRequestError,
    HitPawJobFailedError,
    HitPawRateLimitError,
)
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook, HitPawHook
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Short back-off so that retry tests take tenths of seconds, not tens.
FAST_RETRIES = _api.RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)


def connection(
    monkeypatch: pytest.MonkeyPatch, emulator: Any, key: str, conn_id: str = "hitpaw_other"
) -> str:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({"conn_type": "hitpaw", "host": emulator.base_url, "password": key}),
    )
    return conn_id


def sync_hook(conn_id: str = "hitpaw_default", **kwargs: Any) -> HitPawHook:
    return HitPawHook(conn_id, retry_policy=FAST_RETRIES, **kwargs)


def async_hook(conn_id: str = "hitpaw_default", **kwargs: Any) -> HitPawAsyncHook:
    return HitPawAsyncHook(conn_id, retry_policy=FAST_RETRIES, **kwargs)


def requests_to(emulator: Any, path: str) -> int:
    return int(emulator.state()["requests"].get(path, 0))


class TestFullJob:
    def test_sync_hook_segments_a_sample_and_both_pngs_download(self, hitpaw_emulator: Any) -> None:
        with sync_hook() as hook:
            job = hook.submit_segmentation(hitpaw_emulator.sample_url("shoe.jpg"))
            assert job.consume_coins == 20
            status = hook.wait_for_completion(job.job_id, poll_interval=0.05, timeout=30)
        assert status.is_completed
        assert status.original_url == hitpaw_emulator.sample_url("shoe.jpg")
        for url in (status.res_url, status.mask_url):
            assert url is not None
            body = requests.get(url, timeout=10).content
            assert body.startswith(PNG_SIGNATURE)

    async def test_async_hook_and_trigger_see_the_job_complete(self, hitpaw_emulator: Any) -> None:
        import time

        hitpaw_emulator.configure(job_seconds=3600)  # the job ends when the test says, not by a race
        async with async_hook() as hook:
            job = await hook.submit_segmentation(hitpaw_emulator.sample_url("portrait.png"))
            first = await hook.get_task_status(job.job_id)
        assert first.status == "CONVERTING"
        assert hitpaw_emulator.finish_job(job.job_id)
        trigger = SegmentationTrigger(job.job_id, "hitpaw_default", 0.05, time.time() + 120)
        events = [event async for event in trigger.run()]
        assert len(events) == 1
        assert events[0].payload["status"] == "success"
        assert events[0].payload["res_url"].endswith("cutout.png")

    def test_broken_image_ends_the_job_in_error(self, hitpaw_emulator: Any) -> None:
        with sync_hook() as hook:
            job = hook.submit_segmentation(hitpaw_emulator.sample_url("broken.jpg"))
            with pytest.raises(HitPawJobFailedError):
                hook.wait_for_completion(job.job_id, poll_interval=0.05, timeout=30)


class TestErrorCodes:
    """Every code of the API's table, produced by the emulator, reaches the caller as its family."""

    @pytest.mark.parametrize(
        ("key_state", "code", "family"),
        [
            ("invalid", 110400000, HitPawAuthenticationError),
            ("expired", 100401000, HitPawAuthenticationError),
            ("no_access", 100400000, HitPawAuthenticationError),
        ],
    )
    @pytest.mark.parametrize("side", ["sync", "async"])
    async def test_key_problems(
        self,
        hitpaw_emulator: Any,
        monkeypatch: pytest.MonkeyPatch,
        key_state: str,
        code: int,
        family: type[HitPawError],
        side: str,
    ) -> None:
        key = f"key-{key_state}-0123"
        if key_state != "invalid":
            hitpaw_emulator.set_key(key, key_state)
        conn_id = connection(monkeypatch, hitpaw_emulator, key)
        if side == "sync":
            with sync_hook(conn_id) as hook, pytest.raises(family) as raised:
                hook.submit_segmentation(hitpaw_emulator.sample_url())
        else:
            async with async_hook(conn_id) as ahook:
                with pytest.raises(family) as raised:
                    await ahook.submit_segmentation(hitpaw_emulator.sample_url())
        assert raised.value.code == code
        assert key not in str(raised.value)
        # Permanent: sent once, not retried.
        assert requests_to(hitpaw_emulator, _api.SUBMIT_PATH) == 1

    def test_invalid_url(self, hitpaw_emulator: Any) -> None:
        with sync_hook() as hook, pytest.raises(HitPawInvalidRequestError) as raised:
            hook.submit_segmentation("ftp://127.0.0.1/a.jpg")
        assert raised.value.code == 100400001

    def test_unknown_job_is_a_bad_request(self, hitpaw_emulator: Any) -> None:
        with sync_hook() as hook, pytest.raises(HitPawInvalidRequestError) as raised:
            hook.get_task_status("no-such-job")
        assert raised.value.code == 100400002

    async def test_no_coins(self, hitpaw_emulator: Any) -> None:
        hitpaw_emulator.configure(coins=19)
        async with async_hook() as hook:
            with pytest.raises(HitPawInsufficientCoinsError) as raised:
                await hook.submit_segmentation(hitpaw_emulator.sample_url())
        assert (raised.value.code, raised.value.http_status) == (110402000, 402)
        assert requests_to(hitpaw_emulator, _api.SUBMIT_PATH) == 1

    def test_rate_limit_that_outlasts_the_retries(self, hitpaw_emulator: Any) -> None:
        hitpaw_emulator.set_faults(["429:first_n=10"])
        with sync_hook() as hook, pytest.raises(HitPawRateLimitError) as raised:
            hook.submit_segmentation(hitpaw_emulator.sample_url())
        assert raised.value.code == 100429000
        assert requests_to(hitpaw_emulator, _api.SUBMIT_PATH) == FAST_RETRIES.max_attempts
        assert hitpaw_emulator.state()["jobs"] == []

    def test_error_code_under_http_200(self, hitpaw_emulator: Any) -> None:
        hitpaw_emulator.set_faults(["code_under_200:first_n=1"])
        with sync_hook() as hook:
            job = hook.submit_segmentation(hitpaw_emulator.sample_url())
        assert job.job_id
        assert requests_to(hitpaw_emulator, _api.SUBMIT_PATH) == 2


class TestFaultsSurvived:
    @pytest.mark.parametrize(
        "fault",
        [
            "500:first_n=2",
            # A lost or garbled answer to a submission is resent once only (HitPaw may have charged).
            "503_html:first_n=1",
            "429:first_n=2,retry_after=0",
            "drop:first_n=1",
            "non_json:first_n=1",
        ],
    )
    @pytest.mark.parametrize("side", ["sync", "async"])
    async def test_submit_and_poll_through_faults(self, hitpaw_emulator: Any, fault: str, side: str) -> None:
        hitpaw_emulator.set_faults([fault])
        if side == "sync":
            with sync_hook() as hook:
                job = hook.submit_segmentation(hitpaw_emulator.sample_url())
                status = hook.get_task_status(job.job_id)
        else:
            async with async_hook() as ahook:
                job = await ahook.submit_segmentation(hitpaw_emulator.sample_url())
                status = await ahook.get_task_status(job.job_id)
        assert status.job_id == job.job_id
        state = hitpaw_emulator.state()
        assert len(state["jobs"]) == 1, "a fault before the job was created must not leave two jobs"
        assert sum(state["faults_served"].values()) >= 1

    @pytest.mark.parametrize("side", ["sync", "async"])
    async def test_read_timeout_is_retried(self, hitpaw_emulator: Any, side: str) -> None:
        # The first answer comes long after the read time-out, however fast the machine; the second at
        # once, far within it however busy the machine (a time-out of tenths of a second was not).
        hitpaw_emulator.set_faults(["slow:first_n=1,delay_s=6,paths=/api/task-status"])
        with sync_hook() as hook:
            job = hook.submit_segmentation(hitpaw_emulator.sample_url())
        if side == "sync":
            with sync_hook(read_timeout=2) as hook:
                status = hook.get_task_status(job.job_id)
        else:
            async with async_hook(read_timeout=2) as ahook:
                status = await ahook.get_task_status(job.job_id)
        assert status.job_id == job.job_id
        assert requests_to(hitpaw_emulator, _api.TASK_STATUS_PATH) == 2


class TestKeepAlive:
    def test_sync_hook_reuses_one_connection(self, hitpaw_emulator: Any) -> None:
        before = hitpaw_emulator.state()["connections"]["accepted"]
        with sync_hook() as hook:
            job = hook.submit_segmentation(hitpaw_emulator.sample_url())
            for _ in range(5):
                hook.get_task_status(job.job_id)
        # The state query itself opens one connection too.
        assert hitpaw_emulator.state()["connections"]["accepted"] - before <= 2

    async def test_async_hook_reuses_one_connection(self, hitpaw_emulator: Any) -> None:
        before = hitpaw_emulator.state()["connections"]["accepted"]
        async with async_hook() as hook:
            job = await hook.submit_segmentation(hitpaw_emulator.sample_url())
            for _ in range(5):
                await hook.get_task_status(job.job_id)
        assert hitpaw_emulator.state()["connections"]["accepted"] - before <= 2


def test_test_connection_tells_good_and_bad_keys_apart(
    hitpaw_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sync_hook() as hook:
        assert hook.test_connection()[0] is True
    bad = connection(monkeypatch, hitpaw_emulator, "wrong-key-abcdef")
    with sync_hook(bad) as hook:
        ok, message = hook.test_connection()
    assert ok is False
    assert "wrong-key-abcdef" not in message
    assert hitpaw_emulator.state()["coins"] == 100000, "testing the connection must not spend coins"


async def test_many_triggers_share_one_connection_pool(hitpaw_emulator: Any) -> None:
    """A triggerer's triggers poll through one client per base URL: few connections, all closed at the end."""
    import asyncio
    import time

    from airflow_provider_hitpaw.hooks._transport import CLIENT_CONNECTION_LIMIT
    from tests.unit.fakes import wait_until

    hitpaw_emulator.configure(job_seconds=3600)  # the jobs end when the test says, once polled repeatedly
    with sync_hook() as hook:
        jobs = [hook.submit_segmentation(hitpaw_emulator.sample_url("mug.jpg")).job_id for _ in range(60)]
    before = hitpaw_emulator.state()["connections"]
    accepted_before = before["accepted"]

    async def wait(job_id: str) -> str:
        trigger = SegmentationTrigger(job_id, "hitpaw_default", 0.2, time.time() + 300)
        events = [event async for event in trigger.run()]
        assert len(events) == 1
        return str(events[0].payload["status"])

    waits = asyncio.ensure_future(asyncio.gather(*(wait(job) for job in jobs)))

    def polled_twice() -> bool:
        return requests_to(hitpaw_emulator, _api.TASK_STATUS_PATH) >= 2 * len(jobs)

    await wait_until(polled_twice, waits, "two rounds of polls", within=120)
    for job in jobs:
        assert hitpaw_emulator.finish_job(job)
    outcomes = await waits
    assert outcomes == ["success"] * len(jobs)
    state = hitpaw_emulator.state()
    opened = state["connections"]["accepted"] - accepted_before
    assert 1 <= opened <= CLIENT_CONNECTION_LIMIT + 1  # +1: the state query itself
    assert state["requests"][_api.TASK_STATUS_PATH] > len(jobs)
    # The server notices closed connections a moment after the client closed them.
    # (Connections other tests left open do not count.)
    deadline = time.monotonic() + 60  # a bound only a leaking client reaches
    while hitpaw_emulator.state()["connections"]["open"] > before["open"] + 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    left_open = hitpaw_emulator.state()["connections"]["open"] - before["open"]
    assert left_open <= 1, "the shared client outlived the last trigger"
