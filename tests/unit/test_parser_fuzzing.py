"""Fuzzing what ``tests/unit/test_api.py``'s property tests leave out.

Those feed the parsers bytes, and JSON documents with numbers below 2**70, short ASCII-ish texts and
shallow nesting, and ``Retry-After`` values of at most 12 characters. Here: any Unicode text as a
``Retry-After`` header; JSON with numbers far beyond a float's range, non-finite numbers, deep nesting
and arbitrary Unicode (lone surrogates included). The promise is the same: a parser returns a result or
raises a :class:`HitPawError`, never anything else.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import HitPawError, HitPawRateLimitError, HitPawResponseError

_fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- Retry-After --------------------------------------------------------------------------------------


@_fuzz
@given(header=st.text())
@example(header="inf")
@example(header="1e999")
@example(header="-0")
@example(header="\u0661\u0662")  # Arabic-Indic digits, which float() accepts
@example(header="Wed, 21 Oct 2015 07:28:00 GMT")
def test_any_retry_after_text_gives_none_or_a_usable_delay(header: str) -> None:
    seconds = _api.parse_retry_after(header)
    assert seconds is None or (isinstance(seconds, float) and seconds >= 0)
    # Whatever the header said, the wait it leads to is finite and within the policy's cap.
    policy = _api.RetryPolicy()
    error = HitPawRateLimitError("slow down", http_status=429, retry_after=seconds)
    for attempt in (1, 5):
        delay = policy.delay(error, attempt)
        assert math.isfinite(delay)
        assert 0 <= delay <= max(policy.max_delay, policy.max_retry_after)


@_fuzz
@given(seconds=st.integers(0, 10**6), pad=st.sampled_from(["", " ", "\t", "  "]))
def test_delta_seconds_parse_to_their_value(seconds: int, pad: str) -> None:
    assert _api.parse_retry_after(f"{pad}{seconds}{pad}") == float(seconds)


@pytest.mark.parametrize("header", ["-1", "-0.001", "nan", "NaN", "soon", "1 2", ""])
def test_retry_after_that_is_not_a_delay_is_ignored(header: str) -> None:
    assert _api.parse_retry_after(header) is None


# --- JSON: huge and non-finite numbers, deep nesting, Unicode ------------------------------------------

_huge_numbers = (
    st.integers(-(10**400), 10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([2**63, -(2**63) - 1, 10**308 * 10, 1e308, 5e-324])
)
_unicode = st.text(alphabet=st.characters(codec=None), max_size=30)
_scalars = st.none() | st.booleans() | _huge_numbers | _unicode
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_unicode, children, max_size=3),
    max_leaves=10,
)
_status_data = st.fixed_dictionaries(
    {},
    optional={
        "job_id": _unicode | _values,
        "status": st.sampled_from(["converting", "Completed", "ERROR", "\u0130", "ß"]) | _values,
        "res_url": _unicode | _values,
        "mask_url": _values,
        "original_url": _values,
    },
)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "code": st.sampled_from([200, 100429000, 100500000]) | _huge_numbers | _values,
        "message": _unicode | _values,
        "data": _status_data | _values,
    },
)


def _dumps(document: Any) -> bytes:
    # allow_nan writes Infinity/NaN, which Python's json (and so the parsers) read back.
    return json.dumps(document, allow_nan=True).encode("utf-8", errors="surrogatepass")


def _result_or_hitpaw_error(parse: Any, http_status: int, body: bytes) -> Any:
    try:
        return parse(http_status, body, None)
    except HitPawError as err:
        error = err
    assert str(error).startswith("HitPaw")
    return error


@_fuzz
@given(document=_documents, http_status=st.sampled_from([200, 201, 400, 429, 500, 503]))
def test_task_status_from_wild_json_parses_or_raises_a_hitpaw_error(document: Any, http_status: int) -> None:
    outcome = _result_or_hitpaw_error(_api.parse_task_status, http_status, _dumps(document))
    if isinstance(outcome, _api.TaskStatus):
        assert isinstance(outcome.job_id, str)
        assert outcome.job_id
        assert outcome.status == outcome.status.upper()
        for url in (outcome.res_url, outcome.mask_url, outcome.original_url):
            assert url is None or (isinstance(url, str) and url)
        json.dumps(outcome.to_dict())  # the trigger event / XCom form stays JSON


@_fuzz
@given(document=_documents, http_status=st.integers(100, 599))
def test_envelope_from_wild_json_parses_or_raises_a_hitpaw_error(document: Any, http_status: int) -> None:
    outcome = _result_or_hitpaw_error(_api.parse_envelope, http_status, _dumps(document))
    if not isinstance(outcome, HitPawError):
        assert isinstance(outcome, dict)
        assert document["code"] == 200


@pytest.mark.parametrize("parse", [_api.parse_envelope, _api.parse_submission, _api.parse_task_status])
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deeply-nested-list"),
        pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deeply-nested-object"),
        pytest.param(b'{"code": ' + b"9" * 5000 + b"}", id="integer-beyond-python-digit-limit"),
        pytest.param(b'{"code": 1e999, "data": {}}', id="code-overflows-to-infinity"),
        pytest.param(b'{"code": 200.0, "data": {"job_id": "j", "status": "COMPLETED"}}', id="code-as-float"),
        pytest.param(b'{"code": NaN}', id="code-nan"),
        pytest.param(
            b'{"code": 200, "data": {"job_id": "\\ud800", "status": "\\udfff"}}', id="lone-surrogates"
        ),
        pytest.param(b'\xef\xbb\xbf{"code": 200, "data": {}}', id="utf8-bom"),
        pytest.param('{"code": 200, "message": "\u00e9"}'.encode("utf-16"), id="utf-16"),
    ],
)
def test_pathological_json_parses_or_raises_a_hitpaw_error(parse: Any, body: bytes) -> None:
    limit = sys.getrecursionlimit()
    try:
        _result_or_hitpaw_error(parse, 200, body)
    finally:
        assert sys.getrecursionlimit() == limit


def test_code_as_a_whole_float_is_read_as_that_code() -> None:
    """200.0 is HitPaw's 200 written by a sloppy encoder; 200.5 is no code at all."""
    status = _api.parse_task_status(200, b'{"code": 200.0, "data": {"job_id": "j", "status": "COMPLETED"}}')
    assert status.is_completed
    with pytest.raises(HitPawResponseError):
        _api.parse_task_status(200, b'{"code": 200.5, "data": {"job_id": "j", "status": "COMPLETED"}}')


@pytest.mark.parametrize(
    "coins",
    [
        pytest.param("1" + "0" * 309, id="1e309-as-integer"),
        pytest.param("-" + "9" * 400, id="minus-400-digits"),
        pytest.param("1" + "0" * 4000, id="4001-digits"),
    ],
)
def test_integer_consume_coins_beyond_a_float_is_an_unknown_cost(coins: str) -> None:
    """The job exists (code 200, a job id): an absurd cost makes the cost unknown, never the job lost."""
    body = (
        b'{"code": 200, "message": "OK", "data": {"job_id": "j", "consume_coins": ' + coins.encode() + b"}}"
    )
    assert _api.parse_submission(200, body) == _api.SegmentationJob(job_id="j", consume_coins=None)
