"""HitPawHook's uploads (pre-sign, batch pre-sign, PUT) against scripted HTTP answers.

Requests are caught at the transport (``HTTPAdapter.send``), after requests merged the session's headers
into them: what is recorded is exactly what would go on the wire.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw._api import PresignedUpload
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawConnectionError,
    HitPawInvalidRequestError,
    HitPawRateLimitError,
    HitPawResponseError,
    HitPawServerError,
)
from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook
from tests.conftest import BASE_URL, SECRET_KEY
from tests.unit.fakes import Answer, ScriptedTransport, ok, oss_error

SIGNATURE = "Signature=deadbeefSIGNED"
UPLOAD_URL = f"http://127.0.0.1:9001/oss/upload/uploads/2026/03/25/abc.jpg?Expires=1742954400&{SIGNATURE}"


def presigned(content_type: str = "image/jpeg", key: str = "uploads/2026/03/25/abc.jpg") -> PresignedUpload:
    return PresignedUpload(
        upload_url=UPLOAD_URL,
        access_url=f"http://127.0.0.1:9001/oss/objects/{key}",
        object_key=key,
        content_type=content_type,
        expire_at=1742954400,
    )


def item_json(name: str, content_type: str = "image/jpeg") -> dict[str, Any]:
    key = f"uploads/2026/03/25/{name}"
    return {
        "filename": name,
        "upload_url": f"http://127.0.0.1:9001/oss/upload/{key}?Expires=1&Signature=s",
        "access_url": f"http://127.0.0.1:9001/oss/objects/{key}",
        "object_key": key,
        "content_type": content_type,
        "expire_at": 1742954400,
    }


Script = Callable[..., ScriptedTransport]


@pytest.fixture
def script(mocker: Any) -> Script:
    def install(*answers: Answer, default: Answer | None = None) -> ScriptedTransport:
        transport = ScriptedTransport(list(answers), default)
        mocker.patch.object(HTTPAdapter, "send", autospec=True, side_effect=transport)
        return transport

    return install


@pytest.fixture
def hook(hitpaw_conn: str) -> Iterator[HitPawHook]:
    with HitPawHook(hitpaw_conn) as hook:
        yield hook


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Neither the API key nor an upload URL's signature may reach a log line or the output."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capfd.readouterr()
    formatter = logging.Formatter()
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    texts = [*(formatter.format(record) for record in records), out, err]
    assert not [text for text in texts if SECRET_KEY in text or SIGNATURE in text]
    sys.stdout.write(out)
    sys.stderr.write(err)


# --- pre-sign --------------------------------------------------------------------------------------------


def test_presign_upload_posts_with_the_key(hook: HitPawHook, script: Script) -> None:
    transport = script(ok(item_json("abc.jpg")))
    upload = hook.presign_upload("shoe.jpg", "image/jpeg", expire_seconds=600)
    assert upload.object_key == "uploads/2026/03/25/abc.jpg"
    (sent,) = transport.sent
    assert sent.method == "POST"
    assert sent.url == BASE_URL + _api.PRESIGN_PATH
    assert sent.headers["Apikey"] == SECRET_KEY
    assert json.loads(sent.body or b"") == {
        "filename": "shoe.jpg",
        "content_type": "image/jpeg",
        "expire_seconds": 600,
    }


def test_presign_upload_retries_server_errors(
    hook: HitPawHook, script: Script, no_sleep: list[float]
) -> None:
    transport = script(
        oss_error(500), Answer(raises=requests.ConnectionError("reset")), ok(item_json("a.jpg"))
    )
    assert hook.presign_upload("a.jpg", "image/jpeg").object_key.endswith("a.jpg")
    assert len(transport.sent) == 3
    assert len(no_sleep) == 2


def test_presign_upload_auth_error_is_final(hook: HitPawHook, script: Script, no_sleep: list[float]) -> None:
    transport = script(oss_error(401, "Unauthorized"))
    with pytest.raises(HitPawAuthenticationError):
        hook.presign_upload("a.jpg", "image/jpeg")
    assert len(transport.sent) == 1
    assert no_sleep == []


def test_presign_upload_refuses_bad_input_before_sending(hook: HitPawHook, script: Script) -> None:
    transport = script()
    with pytest.raises(HitPawConfigurationError):
        hook.presign_upload("anim.gif", "image/gif")
    with pytest.raises(HitPawConfigurationError):
        hook.presign_upload("a.jpg", "image/png")
    assert transport.sent == []


def test_presign_uploads_splits_into_calls_of_20(hook: HitPawHook, script: Script) -> None:
    files = [(f"f{i:02}.png", "image/png") for i in range(45)]

    def batch(names: list[str]) -> Answer:
        return ok({"total": len(names), "items": [item_json(n, "image/png") for n in names]})

    names = [name for name, _ in files]
    transport = script(batch(names[:20]), batch(names[20:40]), batch(names[40:]))
    results = hook.presign_uploads(files, expire_seconds=120)
    assert [len(json.loads(s.body or b"")["files"]) for s in transport.sent] == [20, 20, 5]
    assert all(s.url == BASE_URL + _api.PRESIGN_BATCH_PATH for s in transport.sent)
    assert all(json.loads(s.body or b"")["expire_seconds"] == 120 for s in transport.sent)
    assert [r.object_key.rsplit("/", 1)[-1] for r in results if isinstance(r, PresignedUpload)] == names


def test_presign_uploads_keeps_per_file_errors(hook: HitPawHook, script: Script) -> None:
    script(
        ok(
            {
                "items": [
                    item_json("a.jpg"),
                    {"filename": "b.jpg", "error": "content_type does not match the extension"},
                ]
            }
        )
    )
    results = hook.presign_uploads([("a.jpg", "image/jpeg"), ("b.jpg", "image/jpeg")])
    assert isinstance(results[0], PresignedUpload)
    assert isinstance(results[1], HitPawInvalidRequestError)


def test_presign_uploads_wrong_item_count_is_retried_then_raised(
    hook: HitPawHook, script: Script, no_sleep: list[float]
) -> None:
    transport = script(default=ok({"items": [item_json("a.jpg")]}))
    with pytest.raises(HitPawResponseError):
        hook.presign_uploads([("a.jpg", "image/jpeg"), ("b.jpg", "image/jpeg")])
    assert len(transport.sent) == hook.retry_policy.max_attempts


def test_presign_uploads_checks_every_file_first(hook: HitPawHook, script: Script) -> None:
    transport = script()
    files = [(f"f{i}.png", "image/png") for i in range(25)] + [("bad.bmp", "image/bmp")]
    with pytest.raises(HitPawConfigurationError):
        hook.presign_uploads(files)
    assert transport.sent == []


def test_presign_uploads_of_nothing_sends_nothing(hook: HitPawHook, script: Script) -> None:
    transport = script()
    assert hook.presign_uploads([]) == []
    assert transport.sent == []


# --- PUT -----------------------------------------------------------------------------------------------


def test_upload_puts_bytes_with_the_signed_content_type_and_no_key(hook: HitPawHook, script: Script) -> None:
    transport = script(Answer(200, b""))
    _ = hook.session  # the API session exists and carries the key: it must not be the one used
    hook.upload(presigned("image/webp"), b"RIFF....WEBPdata")
    (sent,) = transport.sent
    assert sent.method == "PUT"
    assert sent.url == UPLOAD_URL
    assert sent.headers["Content-Type"] == "image/webp"
    assert "Apikey" not in sent.headers
    assert SECRET_KEY not in json.dumps(sent.headers)
    assert sent.body == b"RIFF....WEBPdata"


def test_upload_streams_a_file_and_rewinds_it_for_a_retry(
    hook: HitPawHook, script: Script, no_sleep: list[float]
) -> None:
    transport = script(Answer(503, b"busy"), Answer(raises=requests.ConnectionError("reset")), Answer(200))
    stream = io.BytesIO(b"prefix|" + b"\xff\xd8\xff" + b"x" * 1000)
    stream.seek(len(b"prefix|"))  # the upload starts where the stream is
    hook.upload(presigned(), stream)
    assert [s.body for s in transport.sent] == [b"\xff\xd8\xff" + b"x" * 1000] * 3
    assert len(no_sleep) == 2


def test_upload_of_a_stream_that_cannot_rewind_is_tried_once(
    hook: HitPawHook, script: Script, no_sleep: list[float]
) -> None:
    class OneWay(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    transport = script(Answer(500, b""))
    with pytest.raises(HitPawServerError):
        hook.upload(presigned(), OneWay(b"\xff\xd8\xffdata"))  # type: ignore[arg-type]
    assert len(transport.sent) == 1
    assert no_sleep == []


@pytest.mark.parametrize(
    ("status", "family"),
    [
        (403, HitPawAuthenticationError),
        (401, HitPawAuthenticationError),
        (400, HitPawInvalidRequestError),
        (404, HitPawInvalidRequestError),
        (413, HitPawInvalidRequestError),
    ],
)
def test_upload_4xx_is_final(
    hook: HitPawHook, script: Script, no_sleep: list[float], status: int, family: type[Exception]
) -> None:
    transport = script(Answer(status, b"<Error><Code>SignatureDoesNotMatch</Code></Error>"))
    with pytest.raises(family) as excinfo:
        hook.upload(presigned(), b"\xff\xd8\xffdata")
    assert type(excinfo.value) is family
    assert len(transport.sent) == 1
    assert no_sleep == []
    assert "SignatureDoesNotMatch" in str(excinfo.value)
    assert SIGNATURE not in str(excinfo.value)


@pytest.mark.parametrize(
    ("fault", "family"),
    [
        (Answer(500, b""), HitPawServerError),
        (Answer(502, b"<html>bad gateway</html>"), HitPawServerError),
        (Answer(429, b"", {"Retry-After": "3"}), HitPawRateLimitError),
        (
            Answer(raises=requests.ConnectionError(f"Max retries exceeded with url: {UPLOAD_URL}")),
            HitPawConnectionError,
        ),
        (Answer(raises=requests.ReadTimeout("read timed out")), HitPawConnectionError),
    ],
)
def test_upload_transient_faults_are_retried_then_raised(
    hook: HitPawHook, script: Script, no_sleep: list[float], fault: Answer, family: type[Exception]
) -> None:
    transport = script(default=fault)
    with pytest.raises(family) as excinfo:
        hook.upload(presigned(), b"\xff\xd8\xffdata")
    assert len(transport.sent) == hook.retry_policy.max_attempts
    assert len(no_sleep) == hook.retry_policy.max_attempts - 1
    assert SIGNATURE not in str(excinfo.value)


def test_upload_honours_retry_after(hook: HitPawHook, script: Script, no_sleep: list[float]) -> None:
    script(Answer(429, b"", {"Retry-After": "9"}), Answer(200))
    hook.upload(presigned(), b"\xff\xd8\xffdata")
    assert no_sleep[0] >= 9


def test_close_closes_the_storage_session(hook: HitPawHook, script: Script) -> None:
    script(Answer(200))
    hook.upload(presigned(), b"\xff\xd8\xff")
    storage_session = hook._storage_session
    assert "Apikey" not in storage_session.headers
    hook.close()
    assert "_storage_session" not in hook.__dict__


def test_an_echoed_signature_stays_out_of_the_error(hook: HitPawHook, script: Script) -> None:
    """Storage error pages quote the signature they were given: it is a credential, never shown."""
    from urllib.parse import parse_qsl, urlsplit

    signature = dict(parse_qsl(urlsplit(UPLOAD_URL).query))["Signature"]
    script(Answer(403, f"<Error><SignatureProvided>{signature}</SignatureProvided></Error>".encode()))
    with pytest.raises(HitPawAuthenticationError) as raised:
        hook.upload(presigned(), b"\xff\xd8\xff" + b"\0" * 16)
    assert signature not in str(raised.value)
    assert "***" in str(raised.value)
