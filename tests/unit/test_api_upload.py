"""The upload protocol of ``_api``: OSS pre-sign requests and answers, content types, format sniffing."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw._api import (
    PRESIGN_BATCH_PATH,
    PRESIGN_PATH,
    UPLOAD_CONTENT_TYPES,
    PresignedUpload,
    content_type_for,
    parse_envelope,
    parse_presign,
    parse_presign_batch,
    presign_batch_request,
    presign_request,
    sniff_image_type,
)
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawError,
    HitPawInvalidRequestError,
    HitPawRateLimitError,
    HitPawResponseError,
    HitPawServerError,
)

UPLOAD_URL = (
    "https://bucket.oss.example.com/uploads/2026/03/25/a1b2c3d4.jpg?OSSAccessKeyId=AK&Signature=SIG-SECRET"
)


def item(**overrides: Any) -> dict[str, Any]:
    base = {
        "upload_url": UPLOAD_URL,
        "access_url": "https://cdn.example.com/uploads/2026/03/25/a1b2c3d4.jpg",
        "object_key": "uploads/2026/03/25/a1b2c3d4.jpg",
        "content_type": "image/jpeg",
        "expire_at": 1742954400,
    }
    base.update(overrides)
    return base


def ok(data: Any) -> bytes:
    return json.dumps({"code": 0, "data": data}).encode()


def oss_error(status: int, message: str) -> bytes:
    return json.dumps({"code": status, "message": message}).encode()


# --- content types and sniffing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("shoe.jpg", "image/jpeg"),
        ("SHOE.JPEG", "image/jpeg"),
        ("a/b/portrait.png", "image/png"),
        ("x.y.webp", "image/webp"),
        (" spaced.png ", "image/png"),
    ],
)
def test_content_type_for_supported(filename: str, expected: str) -> None:
    assert content_type_for(filename) == expected


@pytest.mark.parametrize("filename", ["anim.gif", "scan.bmp", "noext", ".jpg", "photo.tiff", "", "  "])
def test_content_type_for_refuses_what_segmentation_does_not_take(filename: str) -> None:
    with pytest.raises(HitPawConfigurationError) as excinfo:
        content_type_for(filename, field="source_path")
    assert excinfo.value.field == "source_path"
    assert "source_path" in str(excinfo.value)


def test_upload_content_types_are_the_segmentation_formats() -> None:
    assert set(UPLOAD_CONTENT_TYPES) == {".jpg", ".jpeg", ".png", ".webp"}


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a\x01\x00\x01\x00", None),
        (b"BM\x00\x00", None),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"RIFF", None),
        (b"", None),
        (b"<html>", None),
    ],
)
def test_sniff_image_type(head: bytes, expected: str | None) -> None:
    assert sniff_image_type(head) == expected


# --- requests ------------------------------------------------------------------------------------------


def test_presign_request() -> None:
    request = presign_request("shoe.jpg", "image/jpeg", 600)
    assert request.path == PRESIGN_PATH == "/api/oss/presign-put"
    assert request.body == {"filename": "shoe.jpg", "content_type": "image/jpeg", "expire_seconds": 600}
    assert "expire_seconds" not in presign_request("shoe.jpg", "image/jpeg").body


def test_presign_request_normalises_the_content_type_case() -> None:
    assert presign_request("a.PNG", "Image/PNG").body["content_type"] == "image/png"


@pytest.mark.parametrize(
    ("filename", "content_type", "field"),
    [
        ("shoe.jpg", "image/png", "content_type"),
        ("shoe.gif", "image/gif", "filename"),
        ("", "image/jpeg", "filename"),
    ],
)
def test_presign_request_refuses_before_sending(filename: str, content_type: str, field: str) -> None:
    with pytest.raises(HitPawConfigurationError) as excinfo:
        presign_request(filename, content_type)
    assert excinfo.value.field == field


@pytest.mark.parametrize("expire", [59, 7201, 0, -1, True, 60.5, "600"])
def test_presign_request_refuses_expire_seconds_out_of_range(expire: Any) -> None:
    with pytest.raises(HitPawConfigurationError) as excinfo:
        presign_request("a.jpg", "image/jpeg", expire)
    assert excinfo.value.field == "expire_seconds"


@pytest.mark.parametrize("expire", [60, 3600, 7200])
def test_presign_request_accepts_the_documented_range(expire: int) -> None:
    assert presign_request("a.jpg", "image/jpeg", expire).body["expire_seconds"] == expire


def test_presign_batch_request() -> None:
    request = presign_batch_request([("a.jpg", "image/jpeg"), ("b.webp", "image/webp")], 120)
    assert request.path == PRESIGN_BATCH_PATH == "/api/oss/presign-put/batch"
    assert request.body == {
        "files": [
            {"filename": "a.jpg", "content_type": "image/jpeg"},
            {"filename": "b.webp", "content_type": "image/webp"},
        ],
        "expire_seconds": 120,
    }


@pytest.mark.parametrize("count", [0, 21, 100])
def test_presign_batch_request_takes_1_to_20_files(count: int) -> None:
    with pytest.raises(HitPawConfigurationError) as excinfo:
        presign_batch_request([(f"f{i}.png", "image/png") for i in range(count)])
    assert excinfo.value.field == "files"


def test_presign_batch_request_takes_20() -> None:
    files = [(f"f{i}.png", "image/png") for i in range(20)]
    assert len(presign_batch_request(files).body["files"]) == 20


# --- answers -------------------------------------------------------------------------------------------


def test_parse_presign() -> None:
    upload = parse_presign(200, ok(item()))
    assert upload == PresignedUpload(
        upload_url=UPLOAD_URL,
        access_url="https://cdn.example.com/uploads/2026/03/25/a1b2c3d4.jpg",
        object_key="uploads/2026/03/25/a1b2c3d4.jpg",
        content_type="image/jpeg",
        expire_at=1742954400,
    )


def test_presigned_upload_repr_hides_the_signed_url() -> None:
    upload = parse_presign(200, ok(item()))
    assert "SIG-SECRET" not in repr(upload)
    assert "cdn.example.com" in repr(upload)


def test_presigned_upload_is_frozen() -> None:
    upload = parse_presign(200, ok(item()))
    with pytest.raises(AttributeError):
        upload.access_url = "x"  # type: ignore[misc]


def test_success_is_code_0_not_200() -> None:
    # The segmentation API's success code is an error code here.
    with pytest.raises(HitPawError):
        parse_presign(200, json.dumps({"code": 200, "data": item()}).encode())
    with pytest.raises(HitPawError):
        parse_envelope(200, ok({"job_id": "j"}))


@pytest.mark.parametrize(
    ("http_status", "family"),
    [
        (400, HitPawInvalidRequestError),
        (401, HitPawAuthenticationError),
        (403, HitPawAuthenticationError),
        (429, HitPawRateLimitError),
        (500, HitPawServerError),
        (503, HitPawServerError),
    ],
)
def test_presign_errors_are_plain_http_statuses(http_status: int, family: type[HitPawError]) -> None:
    with pytest.raises(family) as excinfo:
        parse_presign(http_status, oss_error(http_status, "extension not allowed: gif"))
    err = excinfo.value
    assert type(err) is family
    assert err.code is None  # an echoed HTTP status is no HitPaw code
    assert err.http_status == http_status
    assert "extension not allowed" in err.message


def test_presign_rate_limit_keeps_retry_after() -> None:
    with pytest.raises(HitPawRateLimitError) as excinfo:
        parse_presign(429, oss_error(429, "slow down"), "7")
    assert excinfo.value.retry_after == 7.0


def test_presign_error_code_under_http_200_is_read_as_a_status() -> None:
    with pytest.raises(HitPawAuthenticationError) as excinfo:
        parse_presign(200, oss_error(401, "Unauthorized"))
    assert excinfo.value.http_status == 401


def test_presign_documented_hitpaw_code_keeps_its_meaning() -> None:
    body = json.dumps({"code": 110400000, "message": "api_key is not valid"}).encode()
    with pytest.raises(HitPawAuthenticationError) as excinfo:
        parse_presign(400, body)
    assert excinfo.value.code == 110400000


@pytest.mark.parametrize(
    ("http_status", "family"),
    [(502, HitPawServerError), (401, HitPawAuthenticationError), (200, HitPawResponseError)],
)
def test_presign_without_envelope(http_status: int, family: type[HitPawError]) -> None:
    with pytest.raises(family):
        parse_presign(http_status, b"<html>bad gateway</html>")


@pytest.mark.parametrize(
    "data",
    [
        item(upload_url=""),
        item(upload_url="ftp://x/y"),
        item(access_url=None),
        item(access_url="/relative/only"),
        item(object_key=5),
        item(content_type=""),
        item(expire_at="soon"),
        item(expire_at=True),
        item(expire_at=1.5),
        {k: v for k, v in item().items() if k != "expire_at"},
    ],
)
def test_presign_broken_items_are_response_errors(data: dict[str, Any]) -> None:
    with pytest.raises(HitPawResponseError) as excinfo:
        parse_presign(200, ok(data))
    assert "SIG-SECRET" not in str(excinfo.value)


def test_presign_without_data_is_a_response_error() -> None:
    with pytest.raises(HitPawResponseError):
        parse_presign(200, json.dumps({"code": 0}).encode())


def test_parse_presign_batch_keeps_order_and_per_file_errors() -> None:
    data = {
        "total": 3,
        "success": 2,
        "failed": 1,
        "items": [
            {"filename": "a.jpg", **item()},
            {"filename": "b.gif", "error": "extension not allowed: gif"},
            {"filename": "c.png", **item(content_type="image/png", object_key="uploads/c.png")},
        ],
    }
    results = parse_presign_batch(200, ok(data), expected=3)
    assert isinstance(results[0], PresignedUpload)
    assert isinstance(results[1], HitPawInvalidRequestError)
    assert "b.gif" in str(results[1])
    assert "extension not allowed" in str(results[1])
    assert isinstance(results[2], PresignedUpload)
    assert results[2].object_key == "uploads/c.png"


def test_parse_presign_batch_counts_items() -> None:
    data = {"items": [item()]}
    with pytest.raises(HitPawResponseError, match="1 items for 2 files"):
        parse_presign_batch(200, ok(data), expected=2)
    assert len(parse_presign_batch(200, ok(data))) == 1


@pytest.mark.parametrize(
    "data", [{}, {"items": "x"}, {"items": ["not an object"]}, {"items": [item(object_key="")]}]
)
def test_parse_presign_batch_broken(data: dict[str, Any]) -> None:
    with pytest.raises(HitPawResponseError):
        parse_presign_batch(200, ok(data))


@pytest.mark.parametrize(
    ("http_status", "family"),
    [(400, HitPawInvalidRequestError), (401, HitPawAuthenticationError), (500, HitPawServerError)],
)
def test_parse_presign_batch_errors(http_status: int, family: type[HitPawError]) -> None:
    with pytest.raises(family):
        parse_presign_batch(http_status, oss_error(http_status, "files must be a list of 1 to 20 entries"))


def test_segmentation_envelope_is_unchanged_by_the_generalisation() -> None:
    body = json.dumps({"code": 100400001, "message": "Invalid URL", "data": {}}).encode()
    with pytest.raises(HitPawInvalidRequestError) as excinfo:
        parse_envelope(400, body)
    assert excinfo.value.code == 100400001
    # An undocumented code is kept as HitPaw's own in the segmentation API.
    with pytest.raises(HitPawError) as excinfo2:
        parse_envelope(400, json.dumps({"code": 999, "message": "new"}).encode())
    assert excinfo2.value.code == 999


def test_url_without_query_and_quote_body() -> None:
    assert (
        _api.url_without_query(UPLOAD_URL) == "https://bucket.oss.example.com/uploads/2026/03/25/a1b2c3d4.jpg"
    )
    assert _api.quote_body(b"x" * 500).endswith("...'")
