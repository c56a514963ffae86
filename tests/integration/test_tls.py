"""Both hooks against the emulator served over https on 127.0.0.1, with a throw-away CA.

Verification is on by default and a certificate failure is permanent (one request, no retry); a CA bundle
in the connection makes the same certificate acceptable; ``"verify": false`` is the explicit opt-out; plain
http goes only to loopback unless the connection says ``"allow_insecure_http": true``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.emulator.server import EmulatorServer
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError, HitPawTLSError
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook, HitPawHook
from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger
from tests.conftest import TLSFiles, make_tls_files

if TYPE_CHECKING:
    from collections.abc import Iterator

CONN_ID = "hitpaw_tls"
FAST_RETRIES = _api.RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tls_files: TLSFiles) -> Iterator[EmulatorServer]:
    with EmulatorServer(job_seconds=0.1, ssl_context=tls_files.server_context()) as server:
        yield server


@pytest.fixture
def emulator(tls_server: EmulatorServer) -> EmulatorServer:
    tls_server.reset()
    assert tls_server.base_url.startswith("https://127.0.0.1:")
    return tls_server


def set_connection(monkeypatch: pytest.MonkeyPatch, host: str, key: str, **extra: Any) -> str:
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps({"conn_type": "hitpaw", "host": host, "password": key, "extra": extra}),
    )
    return CONN_ID


@pytest.fixture(
    params=[
        pytest.param("clean-env", id="no-CA-env-vars"),
        pytest.param(
            "requests-ca-bundle",
            id="REQUESTS_CA_BUNDLE-set",
        ),
    ]
)
def ca_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The process environment requests reads CA settings from: none, or the common container setting
    ``REQUESTS_CA_BUNDLE`` pointing at the public CAs (which must not override the connection)."""
    import certifi

    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "requests-ca-bundle":
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    return str(request.param)


@pytest.fixture
def retry_delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every back-off the hooks ask for (a certificate failure must ask for none)."""
    from airflow_provider_hitpaw.hooks import _transport

    delays: list[float] = []

    async def pause_async(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(_transport, "_pause", delays.append)
    monkeypatch.setattr(_transport, "_pause_async", pause_async)
    return delays


def accepted(emulator: EmulatorServer) -> int:
    return int(emulator.state()["connections"]["accepted"])


class TestVerificationIsOnByDefault:
    @pytest.mark.parametrize("env_bundle", [False, True], ids=["no-CA-env-vars", "REQUESTS_CA_BUNDLE-set"])
    def test_sync_hook_fails_once_without_retrying(
        self,
        emulator: EmulatorServer,
        monkeypatch: pytest.MonkeyPatch,
        retry_delays: list[float],
        env_bundle: bool,
    ) -> None:
        import certifi

        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
            monkeypatch.delenv(name, raising=False)
        if env_bundle:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
        conn_id = set_connection(monkeypatch, emulator.base_url, emulator.api_key)
        before = accepted(emulator)
        with HitPawHook(conn_id, retry_policy=FAST_RETRIES) as hook:
            assert hook.settings.verify is True
            with pytest.raises(HitPawTLSError) as raised:
                hook.submit_segmentation(emulator.sample_url())
        assert raised.value.retryable is False
        assert "CERTIFICATE_VERIFY_FAILED" in str(raised.value)
        assert emulator.api_key not in str(raised.value)
        # One TLS handshake attempt, refused by the client: no retry, nothing reached the API.
        assert accepted(emulator) - before == 1
        assert retry_delays == []
        assert emulator.state()["requests"] == {}
        assert emulator.state()["jobs"] == []

    async def test_async_hook_fails_once_without_retrying(
        self, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, retry_delays: list[float]
    ) -> None:
        conn_id = set_connection(monkeypatch, emulator.base_url, emulator.api_key)
        before = accepted(emulator)
        async with HitPawAsyncHook(conn_id, retry_policy=FAST_RETRIES) as hook:
            with pytest.raises(HitPawTLSError) as raised:
                await hook.submit_segmentation(emulator.sample_url())
        assert raised.value.retryable is False
        assert emulator.api_key not in str(raised.value)
        assert accepted(emulator) - before == 1
        assert retry_delays == []
        assert emulator.state()["requests"] == {}

    async def test_trigger_reports_the_certificate_failure_in_one_event(
        self, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, retry_delays: list[float]
    ) -> None:
        conn_id = set_connection(monkeypatch, emulator.base_url, emulator.api_key)
        before = accepted(emulator)
        trigger = SegmentationTrigger("some-job", conn_id, 0.05, time.time() + 30)
        events = [event async for event in trigger.run()]
        assert len(events) == 1
        assert events[0].payload["status"] == "error"
        assert "CERTIFICATE_VERIFY_FAILED" in events[0].payload["message"]
        assert accepted(emulator) - before == 1
        assert retry_delays == []


class TestWithTheCABundle:
    def test_sync_hook_completes_a_job(
        self, emulator: EmulatorServer, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch, ca_env: str
    ) -> None:
        conn_id = set_connection(
            monkeypatch, emulator.base_url, emulator.api_key, ca_bundle=tls_files.ca_cert
        )
        with HitPawHook(conn_id, retry_policy=FAST_RETRIES) as hook:
            assert hook.settings.verify == tls_files.ca_cert
            job = hook.submit_segmentation(emulator.sample_url("shoe.jpg"))
            status = hook.wait_for_completion(job.job_id, poll_interval=0.05, timeout=30)
        assert status.is_completed
        assert status.res_url is not None
        assert status.res_url.startswith(emulator.base_url)
        cutout = requests.get(status.res_url, verify=tls_files.ca_cert, timeout=10)
        assert cutout.content.startswith(b"\x89PNG")
        assert [job["job_id"] for job in emulator.state()["jobs"]] == [job.job_id]

    async def test_async_hook_and_trigger_complete_a_job(
        self, emulator: EmulatorServer, tls_files: TLSFiles, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        conn_id = set_connection(
            monkeypatch, emulator.base_url, emulator.api_key, ca_bundle=tls_files.ca_cert
        )
        async with HitPawAsyncHook(conn_id, retry_policy=FAST_RETRIES) as hook:
            job = await hook.submit_segmentation(emulator.sample_url("portrait.png"))
        trigger = SegmentationTrigger(job.job_id, conn_id, 0.05, time.time() + 30)
        events = [event async for event in trigger.run()]
        assert len(events) == 1
        assert events[0].payload["status"] == "success"
        assert events[0].payload["res_url"].startswith(emulator.base_url)
        assert [j["job_id"] for j in emulator.state()["jobs"]] == [job.job_id]

    def test_a_missing_bundle_file_names_the_field(
        self, emulator: EmulatorServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        conn_id = set_connection(
            monkeypatch, emulator.base_url, emulator.api_key, ca_bundle=str(tmp_path / "nope.pem")
        )
        with pytest.raises(HitPawConfigurationError) as raised:
            HitPawHook(conn_id).submit_segmentation(emulator.sample_url())
        assert raised.value.field == "extra.ca_bundle"
        assert emulator.state()["requests"] == {}


class TestExplicitOptOut:
    @pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
    def test_sync_hook_with_verify_false(
        self, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch, ca_env: str
    ) -> None:
        conn_id = set_connection(monkeypatch, emulator.base_url, emulator.api_key, verify=False)
        with HitPawHook(conn_id, retry_policy=FAST_RETRIES) as hook:
            assert hook.settings.verify is False
            job = hook.submit_segmentation(emulator.sample_url())
            status = hook.wait_for_completion(job.job_id, poll_interval=0.05, timeout=30)
        assert status.is_completed

    async def test_async_hook_with_verify_false(
        self, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        conn_id = set_connection(monkeypatch, emulator.base_url, emulator.api_key, verify="false")
        async with HitPawAsyncHook(conn_id, retry_policy=FAST_RETRIES) as hook:
            job = await hook.submit_segmentation(emulator.sample_url())
            for _ in range(200):
                status = await hook.get_task_status(job.job_id)
                if status.is_finished:
                    break
                await _sleep(0.05)
        assert status.is_completed


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


class TestPlainHttp:
    """Settings only: a refused base URL never gets as far as a request."""

    @pytest.fixture(autouse=True)
    def no_http(self, mocker: Any) -> Any:
        return mocker.patch.object(requests.Session, "post", side_effect=AssertionError("no request"))

    def test_sync_hook_refuses_http_to_a_remote_host(
        self, monkeypatch: pytest.MonkeyPatch, no_http: Any
    ) -> None:
        conn_id = set_connection(monkeypatch, "http://10.20.30.40:8090", "k-123")
        with pytest.raises(HitPawConfigurationError) as raised:
            HitPawHook(conn_id).submit_segmentation("https://cdn.example.test/a.jpg")
        assert raised.value.field == "host (base URL)"
        assert "10.20.30.40" in str(raised.value)
        no_http.assert_not_called()

    async def test_async_hook_refuses_http_to_a_remote_host(self, monkeypatch: pytest.MonkeyPatch) -> None:
        conn_id = set_connection(monkeypatch, "http://api.example.test", "k-123")
        with pytest.raises(HitPawConfigurationError) as raised:
            await HitPawAsyncHook(conn_id).get_settings()
        assert raised.value.field == "host (base URL)"

    @pytest.mark.parametrize("flag", [True, "true"])
    async def test_both_hooks_allow_it_when_the_connection_says_so(
        self, monkeypatch: pytest.MonkeyPatch, flag: object
    ) -> None:
        conn_id = set_connection(monkeypatch, "http://10.20.30.40:8090", "k-123", allow_insecure_http=flag)
        assert HitPawHook(conn_id).settings.base_url == "http://10.20.30.40:8090"
        assert (await HitPawAsyncHook(conn_id).get_settings()).base_url == "http://10.20.30.40:8090"

    def test_loopback_http_needs_no_flag(self, monkeypatch: pytest.MonkeyPatch) -> None:
        conn_id = set_connection(monkeypatch, "http://127.0.0.1:8090", "k-123")
        assert HitPawHook(conn_id).settings.base_url == "http://127.0.0.1:8090"
