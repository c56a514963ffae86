"""The rules every request meets (hooks/_transport.py): bodies decoded within their cap, the key taken out
of answers however they spell it."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import (
    HitPawInvalidRequestError,
    HitPawResponseError,
    HitPawServerError,
    HitPawUntrustedAnswerError,
)
from airflow_provider_hitpaw.hooks._transport import Attempts, BodyDecoder, scrub_bytes

TEXT = b"The quick brown fox jumps over the lazy dog. " * 200


def decoded(encoding: str | None, body: bytes, limit: int = 10**7, step: int = 1000) -> bytes:
    decoder = BodyDecoder(encoding, limit, "the answer")
    out = b""
    for start in range(0, len(body), step):
        out += b"".join(decoder.feed(body[start : start + step]))
    return out + b"".join(decoder.finish())


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        pytest.param(None, TEXT, id="identity"),
        pytest.param("gzip", gzip.compress(TEXT), id="gzip"),
        pytest.param("deflate", zlib.compress(TEXT), id="deflate-zlib"),
        pytest.param("deflate", zlib.compress(TEXT)[2:-4], id="deflate-raw"),
        pytest.param("gzip", gzip.compress(TEXT[:4000]) + gzip.compress(TEXT[4000:]), id="gzip-two-members"),
    ],
)
def test_bodies_are_decoded(encoding: str | None, body: bytes) -> None:
    assert decoded(encoding, body) == TEXT


def test_a_bomb_is_stopped_at_the_cap_without_inflating_it_whole() -> None:
    bomb = gzip.compress(b"\x00" * (64 * 1024 * 1024))  # 64 MiB in about 64 KiB
    with pytest.raises(HitPawUntrustedAnswerError, match="larger than"):
        decoded("gzip", bomb, limit=1024 * 1024, step=len(bomb))


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress"])
def test_an_encoding_not_asked_for_is_refused(encoding: str) -> None:
    with pytest.raises(HitPawResponseError, match="not asked for"):
        BodyDecoder(encoding, 100, "the answer")


def test_garbage_after_a_compressed_body_is_refused() -> None:
    with pytest.raises(HitPawResponseError, match="after its compressed body"):
        decoded("gzip", gzip.compress(TEXT) + b"<html>")


KEY = "hp-key/with-slash"


@pytest.mark.parametrize(
    "echo",
    [
        KEY,
        KEY.replace("/", "\\/"),  # PHP's json_encode
        "".join(f"\\u{ord(ch):04x}" for ch in KEY),  # every character escaped
    ],
)
def test_the_key_is_taken_out_of_an_answer_however_json_spells_it(echo: str) -> None:
    body = (
        '{"code": 110400000, "message": "key ' + echo + ' refused", "data": {"k": ["' + echo + '"]}}'
    ).encode()
    cleaned = scrub_bytes(body, KEY)
    assert KEY not in json.dumps(json.loads(cleaned))
    assert json.loads(cleaned)["message"] == "key *** refused"


@pytest.mark.parametrize("key", ["k", "ma", "url"])
def test_a_short_key_leaves_an_answer_whole(key: str) -> None:
    """A one-letter key once took every "k" out of the answer: mask_url and object_key were lost."""
    body = b'{"code": 200, "data": {"job_id": "j", "mask_url": "https://r/mask.png", "object_key": "k/1"}}'
    assert scrub_bytes(body, key) == body


def test_field_names_are_never_scrubbed() -> None:
    body = b'{"code": 200, "data": {"res_url": "https://r/c.png", "note": "res_url"}}'
    assert json.loads(scrub_bytes(body, "res_url"))["data"] == {"res_url": "https://r/c.png", "note": "***"}


@pytest.mark.parametrize(
    "body",
    [
        b'{"echo": "hp-key/with-slash", "echo": "x"}',  # the parser keeps the last, the raw text the first
        b'{"hp-key/with-slash": 1}',  # echoed as a field name
        b'{"code": 110400000, "message": "no", "code": 110400000, "data": {"hp-key/with-slash": []}}',
    ],
    ids=["duplicate-field", "field-name", "nested-field-name"],
)
def test_no_spelling_of_an_answer_carries_the_key_past_the_scrub(body: bytes) -> None:
    cleaned = scrub_bytes(body, KEY)
    assert KEY.encode() not in cleaned
    assert KEY not in _api.quote_body(cleaned)


def test_empty_compressed_blocks_without_end_count_against_the_cap() -> None:
    """Raw deflate blocks that inflate to nothing were read without limit until the deadline."""
    empty_block = b"\x00\x00\x00\xff\xff"  # a stored block of no bytes, not the last
    decoder = BodyDecoder("deflate", limit=1024, what="the API's answer")
    list(decoder.feed(b"\x78\x9c" + empty_block * 200))  # 1,002 bytes in, nothing out
    with pytest.raises(HitPawUntrustedAnswerError, match="larger than 1,024 bytes as sent"):
        list(decoder.feed(empty_block * 20))


def test_an_error_leaves_the_attempts_without_any_secret_they_know() -> None:
    """A result link's redirect path, or a storage's error page, may quote the key the API was sent."""
    attempts = Attempts(_api.RetryPolicy(max_attempts=1), secrets=("SECRETKEY-0123456789",))
    error = HitPawInvalidRequestError("downloading http://h/SECRETKEY-0123456789/r.png answered HTTP 404")
    with pytest.raises(HitPawInvalidRequestError) as raised:
        attempts.failed(error)
    assert "SECRETKEY" not in str(raised.value)
    assert "SECRETKEY" not in repr(raised.value.args)
    assert "downloading http://h/***/r.png" in str(raised.value)


def test_the_warning_of_a_retried_attempt_shows_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    attempts = Attempts(_api.RetryPolicy(max_attempts=3, base_delay=0), secrets=("SECRETKEY-0123456789",))
    attempts.begin()
    attempts.failed(HitPawServerError("gateway said SECRETKEY-0123456789", http_status=502))
    assert "SECRETKEY" not in caplog.text


def test_an_escaped_key_in_an_answer_that_is_not_json_is_scrubbed_too() -> None:
    """A gateway's cut-short JSON echo spells the key with JSON escapes; only the plain key was taken out."""
    escaped = "".join(f"\\u{ord(ch):04x}" for ch in KEY[:3]) + KEY[3:].replace("/", "\\/")
    body = ('{"headers": {"Apikey": "' + escaped + '"}, "cut').encode()
    cleaned = scrub_bytes(body, KEY)
    assert KEY not in cleaned.decode()
    assert "***" in cleaned.decode()


def test_an_answer_nested_too_deep_to_walk_stays_readable_json() -> None:
    """A paid job's answer nested ~950 levels deep raised RecursionError out of the scrub: the job went
    unrecorded and a retry paid again."""
    deep = "[" * 950 + '"' + KEY + '"' + "]" * 950
    body = (
        '{"code": 200, "message": "OK", "data": {"job_id": "job-1", "consume_coins": 20, "x": ' + deep + "}}"
    ).encode()
    cleaned = scrub_bytes(body, KEY)
    assert KEY.encode() not in cleaned
    assert json.loads(cleaned)["data"]["job_id"] == "job-1"
