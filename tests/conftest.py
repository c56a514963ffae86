"""Fixtures shared by every test: a distinctive API key, a connection that holds it, fake HTTP clients."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any, Final

import pytest

#: Distinctive on purpose: a test can then search any text for it and find a leak.
SECRET_KEY = "hp-SECRET-7f3a9c2e-do-not-log"
BASE_URL = "http://127.0.0.1:8090"
CONN_ID = "hitpaw_default"

#: A test's time limit by the folder it is in (pyproject.toml's 60 s for the rest): a hung unit test fails
#: within a minute; a suite that runs `airflow dags test` or starts servers may legitimately take minutes.
_TIME_LIMITS: Final = {"lines": 300, "stores": 600, "integration": 900}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("timeout"):
            continue
        path = Path(str(item.fspath))
        if tests not in path.parents:
            continue
        parts = path.relative_to(tests).parts
        if parts and parts[0] in _TIME_LIMITS:
            item.add_marker(pytest.mark.timeout(_TIME_LIMITS[parts[0]]))


@pytest.fixture(autouse=True)
def no_event_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triggers fire as soon as their job ends, in tests that are not about the hold (in this process;
    Airflow components started by a test keep the default)."""
    from airflow_provider_hitpaw import _deferral

    monkeypatch.setenv("AIRFLOW__HITPAW__MIN_DEFERRED_SECONDS", "0")
    monkeypatch.setattr(_deferral, "EVENT_HOLD_SECONDS", 0.0)


@pytest.fixture
def api_key() -> str:
    return SECRET_KEY


@pytest.fixture
def hitpaw_conn(monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``hitpaw_default`` connection from the environment, the one kind a bare unit test can see."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_HITPAW_DEFAULT",
        json.dumps({"conn_type": "hitpaw", "host": BASE_URL, "password": SECRET_KEY}),
    )
    return CONN_ID


def envelope(data: dict[str, Any] | None = None, code: int = 200, message: str = "OK") -> bytes:
    return json.dumps({"code": code, "message": message, "data": data or {}}).encode()


def status_body(job_id: str = "job-1", status: str = "CONVERTING", done: bool | None = None) -> bytes:
    done = status == "COMPLETED" if done is None else done
    return envelope(
        {
            "job_id": job_id,
            "status": status,
            "res_url": f"{BASE_URL}/results/{job_id}/cutout.png" if done else "",
            "mask_url": f"{BASE_URL}/results/{job_id}/mask.png" if done else "",
            "original_url": "http://127.0.0.1:9/shoe.jpg",
        }
    )


@dataclass
class Answer:
    """One scripted HTTP answer, or an exception to raise instead of answering."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    raises: BaseException | None = None


def http_response(answer: Answer, url: str = "") -> Any:
    """A ``requests.Response`` whose body is read from a real urllib3 response, as from a socket."""
    import io

    import requests
    import urllib3

    response = requests.Response()
    response.status_code = answer.status
    response.headers.update(answer.headers)
    response.url = url
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(answer.body),
        headers=answer.headers,
        status=answer.status,
        preload_content=False,
        decode_content=False,
    )
    return response


class FakeStream:
    """``aiohttp.StreamReader``'s reading side: the body in pieces, as a socket delivers it."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    async def iter_chunked(self, size: int) -> Any:
        for start in range(0, len(self._body), size):
            yield self._body[start : start + size]


class FakeAsyncResponse:
    def __init__(self, answer: Answer) -> None:
        self.status = answer.status
        self.headers = answer.headers
        self.content = FakeStream(answer.body)

    async def __aenter__(self) -> FakeAsyncResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class FakeAsyncClient:
    """Stands in for ``aiohttp.ClientSession``: plays scripted answers, records requests and closing."""

    def __init__(self, answers: list[Answer] | None = None, default: Answer | None = None) -> None:
        self.answers = list(answers or [])
        self.default = default
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.request_headers: list[dict[str, str]] = []
        self.closed = False
        self.close_calls = 0

    def post(self, url: str, json: dict[str, Any], **kwargs: Any) -> FakeAsyncResponse:
        self.requests.append((url, json))
        self.request_headers.append(dict(kwargs.get("headers") or {}))
        answer = self.answers.pop(0) if self.answers else self.default
        assert answer is not None, f"unscripted request to {url}"
        if answer.raises is not None:
            raise answer.raises
        return FakeAsyncResponse(answer)

    async def close(self) -> None:
        self.closed = True
        self.close_calls += 1


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the hooks' back-off delays instead of sleeping them."""
    delays: list[float] = []

    async def fake_async_sleep(seconds: float) -> None:
        delays.append(seconds)

    from airflow_provider_hitpaw.hooks import _transport

    monkeypatch.setattr(_transport, "_pause", delays.append)
    monkeypatch.setattr(_transport, "_pause_async", fake_async_sleep)
    return delays


@pytest.fixture
def log_text(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Any:
    """All that was logged so far, whichever way this Airflow logs.

    Airflow 3's ``self.log`` goes through structlog to the process's stdout; Airflow 2's through logging.
    Both are read, so a test that searches the logs (for a leaked key, say) searches them all.
    """
    caplog.set_level(logging.DEBUG)

    def read() -> str:
        out, err = capfd.readouterr()
        # Keep what was read visible to pytest's own report.
        sys.stdout.write(out)
        sys.stderr.write(err)
        return "\n".join([caplog.text, out, err])

    return read


class FakeStateStore:
    """Stands in for Airflow 3.3's ``task_state_store``: what one try sets, the next try gets."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        self.values[key] = as_the_database_returns_it(value)  # the real store keeps JSON only


class FakeTaskInstance:
    """The part of a task instance the operators and the sensor use: when its try started, its tries,
    and its XCom (JSON only, as Airflow keeps it)."""

    def __init__(
        self, start: Any = None, max_tries: int = 2, try_number: int = 1, run_id: str = "run-1"
    ) -> None:
        self.start_date = start
        self.try_number = try_number
        self.max_tries = max_tries
        self.dag_id = "dag"
        self.run_id = run_id
        self.task_id = "task"
        self.map_index = -1
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = as_the_database_returns_it(value)

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **kwargs: Any) -> Any:
        return self.xcom.get(key)


def task_context(
    started_at: float | None = None,
    store: FakeStateStore | None = None,
    max_tries: int = 2,
    try_number: int = 1,
    run_id: str = "run-1",
) -> dict[str, Any]:
    """The part of a task's context that the operators and the sensor read (the tries of one DAG run,
    unless ``run_id`` says which other run)."""
    from datetime import datetime

    start = datetime.fromtimestamp(started_at, tz=UTC) if started_at is not None else None
    context: dict[str, Any] = {"ti": FakeTaskInstance(start, max_tries, try_number, run_id)}
    if store is not None:
        context["task_state_store"] = store
    return context


@pytest.fixture
def fake_hook(mocker: Any) -> Any:
    """A synchronous hook double; tests script ``submit_segmentation`` and ``get_task_status`` on it."""
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

    hook = mocker.MagicMock(spec=HitPawHook)
    hook.__enter__.return_value = hook
    return hook


# --- TLS material for tests that serve the emulator over https ----------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throw-away CA and of a server certificate it signed for 127.0.0.1."""

    ca_cert: str
    server_cert: str
    server_key: str

    def server_context(self) -> Any:
        """An ``ssl.SSLContext`` that serves ``server_cert``."""
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def make_tls_files(directory: Any, host: str = "127.0.0.1") -> TLSFiles:
    """Write a self-signed CA and a server certificate for ``host`` (an IP address) into ``directory``."""
    import datetime
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hitpaw-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = Path(directory)
    files = TLSFiles(
        ca_cert=str(folder / "ca.pem"),
        server_cert=str(folder / "server.pem"),
        server_key=str(folder / "server-key.pem"),
    )
    Path(files.ca_cert).write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    Path(files.server_cert).write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    Path(files.server_key).write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def run_deferred(operator: Any, context: dict[str, Any]) -> Any:
    """What Airflow does with a deferring task: run its trigger to its one event, then resume the task
    with that event and the kwargs it deferred with."""
    import asyncio

    from airflow.providers.common.compat.sdk import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    trigger = deferred.value.trigger

    async def one_event() -> dict[str, Any]:
        events = [event async for event in trigger.run()]
        assert len(events) == 1, "a trigger must yield exactly one event"
        return dict(events[0].payload)

    event = asyncio.run(one_event())
    kwargs = as_the_database_returns_it(deferred.value.kwargs or {})
    return operator.execute_complete(context, as_the_database_returns_it(event), **kwargs)


def as_the_database_returns_it(value: Any) -> Any:
    """What Airflow's metadata database gives back of a value it stored as JSON: on PostgreSQL (JSONB)
    and MySQL an object's keys come back reordered, shorter keys first and then bytewise."""
    import json

    def reorder(item: Any) -> Any:
        if isinstance(item, dict):
            keys = sorted(item, key=lambda key: (len(key.encode()), key.encode()))
            return {key: reorder(item[key]) for key in keys}
        if isinstance(item, list):
            return [reorder(element) for element in item]
        return item

    return reorder(json.loads(json.dumps(value)))


class RecordingTaskInstance:
    """A task instance double that keeps what the task pushes to XCom."""

    def __init__(self, max_tries: int = 2) -> None:
        import time as _time
        from datetime import datetime

        self.start_date = datetime.fromtimestamp(_time.time(), tz=UTC)
        self.try_number = 1
        self.max_tries = max_tries
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = as_the_database_returns_it(value)


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A ``memory://`` root, attached the way each Airflow version attaches a filesystem."""
    from fsspec.implementations.memory import MemoryFileSystem

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]

    attach(protocol="memory", fs=MemoryFileSystem())
    import uuid

    bucket = f"hitpaw-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{bucket}"
    fs = MemoryFileSystem()
    if fs.exists(f"/{bucket}"):
        fs.rm(f"/{bucket}", recursive=True)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hooks back off in hundredths of seconds: tests that meet 429s and 5xx look at what is retried,
    not at how long the back-off is."""
    from airflow_provider_hitpaw import _api
    from airflow_provider_hitpaw.hooks import hitpaw as hooks

    real = hooks._HitPawHookBase.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("retry_policy", _api.RetryPolicy(base_delay=0.02, max_delay=0.2))
        real(self, *args, **kwargs)

    monkeypatch.setattr(hooks._HitPawHookBase, "__init__", init)
