"""The error families: how they print, whether they survive pickling, and which ones a caller may retry."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawConnectionError,
    HitPawError,
    HitPawInsufficientCoinsError,
    HitPawInvalidRequestError,
    HitPawJobFailedError,
    HitPawRateLimitError,
    HitPawResponseError,
    HitPawServerError,
    HitPawTimeoutError,
)

#: Every family built from (message, code, http_status), with whether trying again can help.
RETRYABLE_BY_CLASS = {
    HitPawError: False,
    HitPawAuthenticationError: False,
    HitPawInsufficientCoinsError: False,
    HitPawInvalidRequestError: False,
    HitPawJobFailedError: False,
    HitPawTimeoutError: False,
    HitPawRateLimitError: True,
    HitPawServerError: True,
    HitPawConnectionError: True,
    HitPawResponseError: True,
}
FAMILIES = pytest.mark.parametrize("cls", list(RETRYABLE_BY_CLASS), ids=lambda cls: cls.__name__)


@pytest.mark.parametrize(
    ("code", "http_status", "expected"),
    [
        pytest.param(100400001, 400, "HitPaw (code 100400001, HTTP 400): Invalid URL", id="code-and-status"),
        pytest.param(100400001, None, "HitPaw (code 100400001): Invalid URL", id="code-only"),
        pytest.param(None, 502, "HitPaw (HTTP 502): Invalid URL", id="status-only"),
        pytest.param(None, None, "HitPaw: Invalid URL", id="neither"),
    ],
)
def test_str_shows_code_and_http_status(code: int | None, http_status: int | None, expected: str) -> None:
    err = HitPawInvalidRequestError("Invalid URL", code=code, http_status=http_status)
    assert str(err) == expected
    assert err.message == "Invalid URL"


def test_str_of_configuration_error_names_the_field() -> None:
    err = HitPawConfigurationError("file_url", "is empty")
    assert str(err) == "HitPaw: file_url: is empty"
    assert err.field == "file_url"
    assert (err.code, err.http_status) == (None, None)


def test_a_message_quoting_another_error_says_hitpaw_once() -> None:
    """It once said "HitPaw: source_paths: ... HitPaw: source_path: ...": the prefix is the outer one's."""
    inner = HitPawConfigurationError("source_path", "'/data/a.jpg' cannot be read")
    other = HitPawInvalidRequestError("Invalid URL", code=100400001, http_status=400)
    outer = HitPawConfigurationError("source_paths", f"2 input(s) HitPaw cannot take: {inner}; {other}")
    assert str(outer) == (
        "HitPaw: source_paths: 2 input(s) HitPaw cannot take: source_path: '/data/a.jpg' cannot be read; "
        "(code 100400001, HTTP 400) Invalid URL"
    )


def test_an_error_rebuilt_from_its_own_text_says_hitpaw_once() -> None:
    """A trigger's event carries ``str(err)``, and the task rebuilds the error from it."""
    original = HitPawAuthenticationError("api_key is not valid", code=110400000, http_status=400)
    rebuilt = HitPawAuthenticationError(str(original), code=110400000, http_status=400)
    assert str(rebuilt) == str(original) == "HitPaw (code 110400000, HTTP 400): api_key is not valid"
    assert str(HitPawError(str(HitPawConfigurationError("timeout", "bad")))) == "HitPaw: timeout: bad"


def test_detail_is_the_error_without_its_prefix() -> None:
    assert HitPawServerError("down", http_status=503).detail == "(HTTP 503) down"
    assert HitPawConfigurationError("timeout", "bad").detail == "timeout: bad"


def test_configuration_error_is_a_value_error() -> None:
    # Callers (and Airflow's argument checks) may catch ValueError for bad input.
    with pytest.raises(ValueError, match="timeout: must not be negative"):
        raise HitPawConfigurationError("timeout", "must not be negative")


@FAMILIES
def test_every_family_is_a_hitpaw_error(cls: type[HitPawError]) -> None:
    assert issubclass(cls, HitPawError)


@FAMILIES
def test_retryable_flag(cls: type[HitPawError]) -> None:
    err = cls("boom", code=1, http_status=500)
    assert err.retryable is RETRYABLE_BY_CLASS[cls]


def test_configuration_error_is_not_retryable() -> None:
    assert HitPawConfigurationError("host", "bad").retryable is False


@FAMILIES
@pytest.mark.parametrize(
    ("code", "http_status"),
    [pytest.param(110402000, 402, id="with-code"), pytest.param(None, None, id="without-code")],
)
def test_pickle_round_trip_keeps_everything(
    cls: type[HitPawError], code: int | None, http_status: int | None
) -> None:
    original = cls("The coins are not enough", code=code, http_status=http_status)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is cls
    assert (copy.message, copy.code, copy.http_status) == ("The coins are not enough", code, http_status)
    assert str(copy) == str(original)
    assert copy.retryable is original.retryable


def test_pickle_round_trip_of_configuration_error_keeps_field() -> None:
    original = HitPawConfigurationError("password (API key)", "the connection has no API key: add one")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is HitPawConfigurationError
    assert copy.field == "password (API key)"
    assert copy.message == original.message
    assert str(copy) == str(original)


def test_pickle_round_trip_of_rate_limit_error_keeps_retry_after() -> None:
    original = HitPawRateLimitError("slow down", code=100429000, http_status=429, retry_after=7.0)
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is HitPawRateLimitError
    assert copy.retry_after == 7.0


def test_rate_limit_error_keeps_retry_after() -> None:
    assert HitPawRateLimitError("slow down", retry_after=3.5).retry_after == 3.5
    assert HitPawRateLimitError("slow down").retry_after is None
