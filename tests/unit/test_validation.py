"""Checks on user input, made before any request (and any coin) is spent."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_hitpaw.exceptions import HitPawConfigurationError
from airflow_provider_hitpaw.validation import (
    MAX_URL_LENGTH,
    validate_file_url,
    validate_job_id,
    validate_poll_interval,
    validate_positive_seconds,
    validate_timeout,
)


def _url_of_length(length: int) -> str:
    prefix, suffix = "https://example.com/", ".jpg"
    return prefix + "a" * (length - len(prefix) - len(suffix)) + suffix


def _rejected(check: Any, value: Any, field: str, *args: Any) -> HitPawConfigurationError:
    with pytest.raises(HitPawConfigurationError) as info:
        check(value, *args)
    assert info.value.field == field
    assert field in str(info.value)
    return info.value


# --- validate_file_url ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://example.com/cat.jpg", id="https-jpg"),
        pytest.param("http://example.com/cat.jpeg", id="http-jpeg"),
        pytest.param("https://example.com/a/b/cat.png", id="png"),
        pytest.param("https://example.com/cat.webp", id="webp"),
        pytest.param("https://example.com/CAT.JPG", id="uppercase-extension"),
        pytest.param("https://cdn.example.com/images/12345", id="no-extension"),
        pytest.param("https://example.com/", id="root-path"),
        pytest.param("https://example.com/cat.png?X-Signature=abc&expires=1", id="query-string"),
        pytest.param("https://example.com/render?format=gif", id="no-extension-query-mentions-gif"),
        pytest.param("https://example.com:8443/cat.jpg", id="explicit-port"),
        pytest.param("http://93.184.215.14:9/shoe.jpg", id="ip-address"),
        pytest.param("https://example.com/my%20cat.jpg", id="percent-encoded-space"),
        pytest.param(_url_of_length(MAX_URL_LENGTH), id="exactly-max-length"),
    ],
)
def test_file_url_accepted(url: str) -> None:
    assert validate_file_url(url) == url


def test_file_url_is_returned_stripped() -> None:
    assert validate_file_url("  https://example.com/cat.jpg\n") == "https://example.com/cat.jpg"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(None, id="none"),
        pytest.param(42, id="int"),
        pytest.param(b"https://example.com/cat.jpg", id="bytes"),
        pytest.param("example.com/cat.jpg", id="no-scheme"),
        pytest.param("images/cat.jpg", id="relative-path"),
        pytest.param("/images/cat.jpg", id="absolute-path"),
        pytest.param("//example.com/cat.jpg", id="scheme-relative"),
        pytest.param("ftp://example.com/cat.jpg", id="ftp"),
        pytest.param("file:///tmp/cat.jpg", id="file"),
        pytest.param("javascript:alert(1)", id="javascript"),
        pytest.param("data:image/png;base64,iVBORw0KGgo=", id="data"),
        pytest.param("http:///x.jpg", id="no-host"),
        pytest.param(_url_of_length(MAX_URL_LENGTH + 1), id="too-long"),
        pytest.param("https://example.com/cat.gif", id="gif"),
        pytest.param("https://example.com/cat.tiff", id="tiff"),
        pytest.param("https://example.com/cat.pdf", id="pdf"),
        pytest.param("https://example.com/cat.GIF?v=1", id="uppercase-gif-with-query"),
        pytest.param("https://example.com/cat%2Egif", id="percent-encoded-gif"),
        pytest.param("https://example.com/my cat.jpg", id="space-inside"),
        pytest.param("https://example.com/cat\t.jpg", id="tab-inside"),
        pytest.param("https://example.com/\ncat.jpg", id="newline-inside"),
        pytest.param("https://example.com/\x00cat.jpg", id="control-character"),
        pytest.param("https://example.com:99999/cat.jpg", id="port-out-of-range"),
        pytest.param("https://example.com:http/cat.jpg", id="port-not-a-number"),
    ],
)
def test_file_url_rejected_naming_the_field(value: Any) -> None:
    _rejected(validate_file_url, value, "file_url")


def test_file_url_error_names_a_custom_field() -> None:
    err = _rejected(validate_file_url, "ftp://example.com/cat.jpg", "image_url", "image_url")
    assert "ftp" in str(err)


def test_file_url_error_says_the_length() -> None:
    err = _rejected(validate_file_url, _url_of_length(MAX_URL_LENGTH + 1), "file_url")
    assert str(MAX_URL_LENGTH + 1) in str(err)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("https://example.com/u/John.Smith", id="dotted-name"),
        pytest.param("https://example.com/products/v2.0", id="version"),
        pytest.param("https://example.com/render.php?img=a.jpg", id="script"),
        pytest.param("https://example.com/img.aspx?id=7", id="aspx"),
        pytest.param("https://cdn.example.com/photo.JPG", id="uppercase-jpg"),
    ],
)
def test_a_dot_in_the_path_is_no_reason_to_refuse(url: str) -> None:
    """Only extensions of image formats HitPaw does not segment refuse a URL by its name."""
    assert validate_file_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param("http://192.168.1.20/a.jpg", "private", id="private-ip"),
        pytest.param("http://10.0.0.7/a.jpg", "private", id="ten-net"),
        pytest.param("http://127.0.0.1:9/a.jpg", "loopback", id="loopback"),
        pytest.param("http://[::1]/a.jpg", "loopback", id="ipv6-loopback"),
        pytest.param("http://169.254.169.254/latest/meta-data", "link-local", id="metadata"),
        pytest.param("http://0.0.0.0/a.jpg", "reserved", id="unspecified"),
        pytest.param("https://intranet.corp.local/a.jpg", ".local", id="dot-local"),
        pytest.param("https://files.internal/a.jpg", ".internal", id="dot-internal"),
        pytest.param("http://fileserver/a.jpg", "single-label", id="single-label"),
        pytest.param("http://localhost:8080/a.jpg", "this machine", id="localhost"),
        # Every historical spelling of an IPv4 address, as inet_aton and browsers read them.
        pytest.param("http://0x7f.1/a.jpg", "127.0.0.1, a loopback", id="hex-short"),
        pytest.param("http://127.1/a.jpg", "127.0.0.1, a loopback", id="short"),
        pytest.param("http://0177.0.0.1/a.jpg", "127.0.0.1, a loopback", id="octal"),
        pytest.param("http://127.000.000.001/a.jpg", "127.0.0.1, a loopback", id="zero-padded"),
        pytest.param("http://2130706433/a.jpg", "127.0.0.1, a loopback", id="decimal"),
        pytest.param("http://10.1/a.jpg", "10.0.0.1, a private", id="private-short"),
        pytest.param("http://0.0/a.jpg", "0.0.0.0, a reserved", id="unspecified-short"),
        pytest.param("http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/a.jpg", "loopback", id="full-width"),
        pytest.param("http://1.2.3.999/a.jpg", "no IPv4 address", id="number-not-address"),
        # What IDNA's mapping makes of them before a resolver sees them (NFKC alone leaves them).
        pytest.param("http://127.0.0.1\u3002/a.jpg", "loopback", id="ideographic-full-stop"),
        pytest.param("http://127.0.0\uff611/a.jpg", "loopback", id="halfwidth-full-stop"),
        pytest.param("http://127.0.0.1\u200b/a.jpg", "loopback", id="zero-width-space"),
        pytest.param("http://169.254.169.254\u3002/latest", "link-local", id="metadata-ideographic"),
    ],
)
def test_an_image_hitpaw_could_not_reach_is_refused_before_paying(url: str, reason: str) -> None:
    err = _rejected(validate_file_url, url, "file_url")
    assert reason in str(err)
    assert "source_path" in str(err)


def test_internal_hosts_are_allowed_when_hitpaw_itself_is_internal() -> None:
    """The local emulator on 127.0.0.1 fetches from 127.0.0.1: there the same URL is fine."""
    url = "http://127.0.0.1:9/shoe.jpg"
    assert validate_file_url(url, allow_internal_hosts=True) == url


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        pytest.param("/data/in/shoe.jpg", "local path", id="local-path"),
        pytest.param("C:\\images\\shoe.jpg", "local path", id="windows-path"),
        pytest.param("s3://bucket/in/shoe.jpg", "s3://", id="s3"),
        pytest.param("gs://bucket/in/shoe.jpg", "gs://", id="gs"),
    ],
)
def test_a_stored_file_given_as_file_url_points_to_source_path(value: str, hint: str) -> None:
    err = _rejected(validate_file_url, value, "file_url")
    assert hint in str(err)
    assert "source_path" in str(err)
    assert "not no scheme" not in str(err)


# --- validate_job_id ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param(" \t ", id="blank"),
        pytest.param(None, id="none"),
        pytest.param(12345, id="int"),
    ],
)
def test_job_id_rejected_naming_the_field(value: Any) -> None:
    _rejected(validate_job_id, value, "job_id")


def test_job_id_is_returned_stripped() -> None:
    assert validate_job_id("  f5007c0b-e902  ") == "f5007c0b-e902"


# --- validate_positive_seconds --------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(0, id="zero"),
        pytest.param(0.0, id="zero-float"),
        pytest.param(-1, id="negative"),
        pytest.param(-0.5, id="negative-float"),
        pytest.param(True, id="bool-true"),
        pytest.param(False, id="bool-false"),
        pytest.param("5", id="string"),
        pytest.param(None, id="none"),
        pytest.param(math.nan, id="nan"),
    ],
)
def test_positive_seconds_rejected_naming_the_field(value: Any) -> None:
    _rejected(validate_positive_seconds, value, "poll_interval", "poll_interval")


@pytest.mark.parametrize(("value", "expected"), [(0.5, 0.5), (3, 3.0)], ids=["float", "int"])
def test_positive_seconds_accepted_as_float(value: float, expected: float) -> None:
    result = validate_positive_seconds(value, "poll_interval")
    assert result == expected
    assert type(result) is float


# --- validate_timeout -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(-1, id="negative"),
        pytest.param(-0.001, id="slightly-negative"),
        pytest.param(timedelta(seconds=-1), id="negative-timedelta"),
        pytest.param(True, id="bool"),
        pytest.param("60", id="string"),
        pytest.param(None, id="none"),
        pytest.param(
            math.nan,
            id="nan",
        ),
    ],
)
def test_timeout_rejected_naming_the_field(value: Any) -> None:
    _rejected(validate_timeout, value, "timeout")


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(0, id="zero"),
        pytest.param(0.0, id="zero-float"),
        pytest.param(-0.0, id="negative-zero"),
        pytest.param(timedelta(0), id="zero-timedelta"),
    ],
)
def test_a_zero_timeout_is_refused(value: Any) -> None:
    """A wait of 0 s was accepted: the operator then paid for a job it could never wait for."""
    err = _rejected(validate_timeout, value, "timeout")
    assert "more than 0 seconds" in str(err)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(0.5, 0.5, id="half-a-second"),
        pytest.param(90, 90.0, id="int"),
        pytest.param(timedelta(minutes=5), 300.0, id="timedelta"),
    ],
)
def test_timeout_accepted_as_seconds(value: Any, expected: float) -> None:
    result = validate_timeout(value)
    assert result == expected
    assert type(result) is float


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(1e15, id="1e15"),
        pytest.param(8 * 24 * 3600 + 1, id="a-second-past-8-days"),
        pytest.param(timedelta(days=30), id="a-month"),
    ],
)
def test_a_timeout_longer_than_hitpaw_keeps_a_job_is_refused(value: Any) -> None:
    """A deadline past 8 days means nothing (the job is gone by then) and 1e15 overflowed after payment."""
    err = _rejected(validate_timeout, value, "timeout")
    assert "8 days" in str(err)


def test_eight_days_is_the_longest_wait() -> None:
    assert validate_timeout(timedelta(days=8)) == 8 * 24 * 3600


@pytest.mark.parametrize("value", [1e-9, 0.5, 0.999])
def test_a_poll_interval_under_a_second_is_refused(value: float) -> None:
    err = _rejected(validate_poll_interval, value, "poll_interval")
    assert "at least 1" in str(err)


@pytest.mark.parametrize(
    "job_id",
    [
        pytest.param("job\n2026 [info] forged", id="newline"),
        pytest.param("\x1b[2J", id="ansi"),
        pytest.param("j" * 129, id="too-long"),
        pytest.param("../x", id="path"),
    ],
)
def test_a_job_id_that_could_forge_a_log_line_or_a_path_is_refused(job_id: str) -> None:
    err = _rejected(validate_job_id, job_id, "job_id")
    assert "\n" not in str(err)
    assert "\x1b" not in str(err)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        pytest.param("http://127.0.0.1\\@example.com/a.jpg", "backslash", id="backslash-host"),
        pytest.param("http://example.com:0/a.jpg", "port 0", id="port-zero"),
    ],
)
def test_a_host_parsers_read_differently_or_no_server_has_is_refused(url: str, says: str) -> None:
    assert says in str(_rejected(validate_file_url, url, "file_url"))


def test_a_name_that_only_looks_numeric_is_a_name() -> None:
    for url in ("https://3com.example/a.jpg", "https://cdn.example.com/v2.0/a.jpg", "https://8.8.8.8/a.jpg"):
        assert validate_file_url(url) == url
