"""HitPawHook (requests) and HitPawAsyncHook (aiohttp) against scripted HTTP answers.

Every test here also checks, on the way out, that the API key reached no log record and no captured output.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import requests

from airflow_provider_hitpaw import __version__, _api
from airflow_provider_hitpaw._settings import ConnectionSettings
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
    HitPawSubmissionUnknownError,
    HitPawTimeoutError,
)
from airflow_provider_hitpaw.get_provider_info import get_provider_info
from airflow_provider_hitpaw.hooks import _transport
from airflow_provider_hitpaw.hooks import hitpaw as hooks
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook, HitPawHook
from tests.conftest import (
    BASE_URL,
    CONN_ID,
    SECRET_KEY,
    Answer,
    FakeAsyncClient,
    envelope,
    http_response,
    status_body,
)

IMAGE_URL = "https://example.com/shoe.jpg"
SUBMIT_URL = BASE_URL + _api.SUBMIT_PATH
STATUS_URL = BASE_URL + _api.TASK_STATUS_PATH


# --- scripted answers -----------------------------------------------------------------------------


def ok_submission(job_id: str = "job-1") -> Answer:
    return Answer(200, envelope({"job_id": job_id, "consume_coins": 20}))


def ok_status(status: str = "CONVERTING", job_id: str = "job-1") -> Answer:
    return Answer(200, status_body(job_id, status))


def hitpaw_error(code: int, http_status: int, message: str = "refused") -> Answer:
    return Answer(http_status, envelope(code=code, message=message))


#: The documented permanent errors: each must be raised after exactly one request.
PERMANENT_ERRORS = [
    pytest.param(110400000, 400, HitPawAuthenticationError, id="110400000-bad-key"),
    pytest.param(110402000, 402, HitPawInsufficientCoinsError, id="110402000-coins"),
    pytest.param(100400001, 400, HitPawInvalidRequestError, id="100400001-invalid-url"),
    pytest.param(100401000, 401, HitPawAuthenticationError, id="100401000-expired"),
    pytest.param(100400000, 400, HitPawAuthenticationError, id="100400000-no-access"),
    pytest.param(100400002, 400, HitPawInvalidRequestError, id="100400002-bad-request"),
]

#: Faults that must be retried, for the requests-based hook, with the family they end as.
SYNC_TRANSIENT_FAULTS = [
    pytest.param(
        Answer(raises=requests.ConnectionError("connection refused")), HitPawConnectionError, id="refused"
    ),
    pytest.param(Answer(raises=requests.Timeout("read timed out")), HitPawConnectionError, id="timeout"),
    pytest.param(
        Answer(raises=requests.ConnectTimeout("connect")), HitPawConnectionError, id="connect-timeout"
    ),
    pytest.param(Answer(500, b"<html>Internal Server Error</html>"), HitPawServerError, id="http-500"),
    pytest.param(Answer(503, b""), HitPawServerError, id="http-503-empty"),
    pytest.param(Answer(429, b""), HitPawRateLimitError, id="http-429"),
    pytest.param(hitpaw_error(100429000, 429), HitPawRateLimitError, id="100429000"),
    pytest.param(hitpaw_error(100500000, 500, "Internal error"), HitPawServerError, id="100500000"),
    pytest.param(Answer(200, b"<html>proxy login</html>"), HitPawResponseError, id="html-under-200"),
]

#: The same for the aiohttp-based hook (asyncio.TimeoutError is the builtin TimeoutError since 3.11).
ASYNC_TRANSIENT_FAULTS = [
    pytest.param(
        Answer(raises=aiohttp.ClientConnectionError("refused")), HitPawConnectionError, id="refused"
    ),
    pytest.param(Answer(raises=aiohttp.ServerDisconnectedError()), HitPawConnectionError, id="disconnected"),
    pytest.param(Answer(raises=TimeoutError()), HitPawConnectionError, id="asyncio-timeout"),
    pytest.param(Answer(500, b"<html>Internal Server Error</html>"), HitPawServerError, id="http-500"),
    pytest.param(Answer(429, b""), HitPawRateLimitError, id="http-429"),
    pytest.param(hitpaw_error(100500000, 500, "Internal error"), HitPawServerError, id="100500000"),
    pytest.param(Answer(200, b"<html>proxy login</html>"), HitPawResponseError, id="html-under-200"),
]

#: Faults after which HitPaw may have accepted a submission (the request had left; the answer was lost or
#: came from something in front of the API): a submission is sent once more at most, never five times.
LANDED_MAYBE = {
    "refused",
    "timeout",
    "http-500",
    "http-503-empty",
    "html-under-200",
    "disconnected",
    "asyncio-timeout",
}


def expected_attempts(
    request: pytest.FixtureRequest, family: type[HitPawError]
) -> tuple[int, type[HitPawError]]:
    fault_id, _, call_id = request.node.callspec.id.rpartition("-")
    if call_id == "submit" and fault_id in LANDED_MAYBE:
        return 2, HitPawSubmissionUnknownError
    return 5, family


#: The default back-off ceilings of attempts 1..4 (1 s, 2 s, 4 s, 8 s), each jittered into its upper half.
DEFAULT_CEILINGS = [1.0, 2.0, 4.0, 8.0]


def assert_default_backoff(delays: list[float], retries: int = 4) -> None:
    assert len(delays) == retries
    for delay, ceiling in zip(delays, DEFAULT_CEILINGS, strict=False):
        assert ceiling / 2 <= delay <= ceiling


@dataclass
class PostCall:
    session: requests.Session
    url: str
    json: Any
    kwargs: dict[str, Any]


class ScriptedPost:
    """Stands in for ``requests.Session.post``: plays scripted answers, records every request."""

    def __init__(self, answers: list[Answer], default: Answer | None) -> None:
        self.answers = answers
        self.default = default
        self.calls: list[PostCall] = []

    def __call__(
        self, session: requests.Session, url: str, json: Any = None, **kwargs: Any
    ) -> requests.Response:
        self.calls.append(PostCall(session, url, json, kwargs))
        answer = self.answers.pop(0) if self.answers else self.default
        assert answer is not None, f"unscripted request to {url}"
        if answer.raises is not None:
            raise answer.raises
        return http_response(answer)


Script = Callable[..., ScriptedPost]


@pytest.fixture
def script(mocker: Any) -> Script:
    """``script(answer, ..., default=answer)`` makes every requests.Session answer with these."""

    def install(*answers: Answer, default: Answer | None = None) -> ScriptedPost:
        post = ScriptedPost(list(answers), default)
        mocker.patch.object(requests.Session, "post", autospec=True, side_effect=post)
        return post

    return install


@pytest.fixture(autouse=True)
def no_key_in_logs(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Fail any test whose logs or output show the API key (stdlib records, and structlog's output)."""
    caplog.set_level(logging.DEBUG)
    yield
    out, err = capfd.readouterr()
    # caplog.records and caplog.text only hold the current phase (teardown, here).
    formatter = logging.Formatter()
    records = [*caplog.get_records("setup"), *caplog.get_records("call")]
    messages = [formatter.format(record) for record in records]
    assert not [text for text in [*messages, out, err] if SECRET_KEY in text]
    # Let pytest still show the output of a failed test.
    sys.stdout.write(out)
    sys.stderr.write(err)


@pytest.fixture
def hook(hitpaw_conn: str) -> Iterator[HitPawHook]:
    with HitPawHook(hitpaw_conn) as hook:
        yield hook


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch, no_sleep: list[float]) -> list[float]:
    """A monotonic clock that moves only when the hook pauses; returns the recorded pauses."""
    now = [1000.0]

    def pause(seconds: float) -> None:
        no_sleep.append(seconds)
        now[0] += seconds

    clock = SimpleNamespace(monotonic=lambda: now[0], time=lambda: now[0], sleep=pause)
    monkeypatch.setattr(_transport, "_pause", pause)
    monkeypatch.setattr(_transport, "time", clock)
    monkeypatch.setattr(hooks, "time", clock)
    return no_sleep


def assert_key_only_in_header(call: PostCall) -> None:
    assert call.session.headers[_api.API_KEY_HEADER] == SECRET_KEY
    assert SECRET_KEY not in call.url
    assert SECRET_KEY not in json.dumps(call.json)
    assert SECRET_KEY not in json.dumps(call.kwargs, default=str)


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "hitpaw", **fields}))
    return conn_id


# --- HitPawHook: successful calls -----------------------------------------------------------------


def test_submit_segmentation(hook: HitPawHook, script: Script) -> None:
    post = script(ok_submission("f5007c0b"))
    assert hook.submit_segmentation(IMAGE_URL) == _api.SegmentationJob(job_id="f5007c0b", consume_coins=20)
    [call] = post.calls
    assert (call.url, call.json) == (SUBMIT_URL, {"file_url": IMAGE_URL})
    assert call.kwargs["timeout"] == (hooks.DEFAULT_CONNECT_TIMEOUT, hooks.DEFAULT_READ_TIMEOUT)
    assert call.session.headers["Content-Type"] == "application/json"
    assert_key_only_in_header(call)


def test_get_task_status(hook: HitPawHook, script: Script) -> None:
    post = script(ok_status("COMPLETED", "job-7"))
    status = hook.get_task_status("  job-7 ")
    assert (status.job_id, status.status, status.is_completed) == ("job-7", "COMPLETED", True)
    assert status.res_url == f"{BASE_URL}/results/job-7/cutout.png"
    [call] = post.calls
    assert (call.url, call.json) == (STATUS_URL, {"job_id": "job-7"})
    assert_key_only_in_header(call)


def test_timeouts_are_passed_to_requests(hitpaw_conn: str, script: Script) -> None:
    post = script(ok_status())
    HitPawHook(hitpaw_conn, connect_timeout=1.5, read_timeout=4.0).get_task_status("job-1")
    assert post.calls[0].kwargs["timeout"] == (1.5, 4.0)


@pytest.mark.parametrize("job_id", [pytest.param("", id="empty"), pytest.param("  ", id="blank")])
def test_get_task_status_checks_job_id_before_sending(hook: HitPawHook, script: Script, job_id: str) -> None:
    post = script()
    with pytest.raises(HitPawConfigurationError, match="job_id"):
        hook.get_task_status(job_id)
    assert post.calls == []


# --- HitPawHook: errors and retries ---------------------------------------------------------------

SYNC_CALLS = pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda hook: hook.submit_segmentation(IMAGE_URL), id="submit"),
        pytest.param(lambda hook: hook.get_task_status("job-1"), id="status"),
    ],
)


@SYNC_CALLS
@pytest.mark.parametrize(("code", "http_status", "family"), PERMANENT_ERRORS)
def test_permanent_error_raised_after_one_call(
    hook: HitPawHook,
    script: Script,
    no_sleep: list[float],
    call: Callable[[HitPawHook], Any],
    code: int,
    http_status: int,
    family: type[HitPawError],
) -> None:
    post = script(default=hitpaw_error(code, http_status, "HitPaw says no"))
    with pytest.raises(family) as info:
        call(hook)
    assert (info.value.code, info.value.http_status, info.value.message) == (
        code,
        http_status,
        "HitPaw says no",
    )
    assert len(post.calls) == 1
    assert no_sleep == []


@pytest.mark.parametrize(("code", "http_status", "family"), PERMANENT_ERRORS)
def test_error_code_under_http_200_is_raised(
    hook: HitPawHook, script: Script, code: int, http_status: int, family: type[HitPawError]
) -> None:
    post = script(default=hitpaw_error(code, 200))
    with pytest.raises(family) as info:
        hook.get_task_status("job-1")
    assert (info.value.code, info.value.http_status) == (code, 200)
    assert len(post.calls) == 1


@SYNC_CALLS
@pytest.mark.parametrize(("fault", "family"), SYNC_TRANSIENT_FAULTS)
def test_transient_fault_retried_max_attempts_times(
    hook: HitPawHook,
    script: Script,
    no_sleep: list[float],
    call: Callable[[HitPawHook], Any],
    fault: Answer,
    family: type[HitPawError],
    request: pytest.FixtureRequest,
) -> None:
    attempts, raised = expected_attempts(request, family)
    post = script(default=fault)
    with pytest.raises(raised):
        call(hook)
    assert len(post.calls) == attempts
    assert_default_backoff(no_sleep, retries=attempts - 1)
    # Every attempt is the same request on the same session.
    assert {(c.url, json.dumps(c.json)) for c in post.calls} == {
        (post.calls[0].url, json.dumps(post.calls[0].json))
    }


@pytest.mark.parametrize(("fault", "family"), SYNC_TRANSIENT_FAULTS)
def test_transient_faults_then_success(
    hook: HitPawHook,
    script: Script,
    no_sleep: list[float],
    fault: Answer,
    family: type[HitPawError],
    request: pytest.FixtureRequest,
) -> None:
    # Two faults in a row: a status poll rides them out; so does a submission, unless its answer may have
    # been lost after HitPaw accepted it: that is sent once more at most.
    post = script(fault, fault, ok_submission("job-ok"))
    if request.node.callspec.id in LANDED_MAYBE:
        with pytest.raises(HitPawSubmissionUnknownError, match="may have accepted"):
            hook.submit_segmentation(IMAGE_URL)
        assert len(post.calls) == 2
        return
    assert hook.submit_segmentation(IMAGE_URL).job_id == "job-ok"
    assert len(post.calls) == 3
    assert_default_backoff(no_sleep, retries=2)


def test_a_submission_whose_answer_was_lost_once_is_sent_once_more(
    hook: HitPawHook, script: Script, no_sleep: list[float], log_text: Any
) -> None:
    post = script(Answer(raises=requests.ReadTimeout("read timed out")), ok_submission("job-ok"))
    assert hook.submit_segmentation(IMAGE_URL).job_id == "job-ok"
    assert len(post.calls) == 2
    assert "charged twice" in log_text()


def test_a_refused_connection_proves_nothing_was_submitted(
    hook: HitPawHook, script: Script, no_sleep: list[float]
) -> None:
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    refused = requests.ConnectionError(MaxRetryError(None, "/", NewConnectionError(None, "refused")))
    post = script(*[Answer(raises=refused)] * 3, ok_submission("job-ok"))
    assert hook.submit_segmentation(IMAGE_URL).job_id == "job-ok"
    assert len(post.calls) == 4


def test_redirects_are_not_followed(hook: HitPawHook, script: Script, no_sleep: list[float]) -> None:
    """A redirect would carry the key to another host: it is a configuration error, sent nowhere."""
    post = script(Answer(307, b"", headers={"Location": "http://elsewhere.test/api"}))
    with pytest.raises(HitPawConfigurationError, match="redirect"):
        hook.get_task_status("job-1")
    assert len(post.calls) == 1
    assert post.calls[0].kwargs.get("allow_redirects") is False


@pytest.mark.parametrize("max_attempts", [1, 2, 7])
def test_retry_policy_decides_the_number_of_calls(
    hitpaw_conn: str, script: Script, no_sleep: list[float], max_attempts: int
) -> None:
    post = script(default=Answer(502, b"Bad Gateway"))
    hook = HitPawHook(hitpaw_conn, retry_policy=_api.RetryPolicy(max_attempts=max_attempts))
    with pytest.raises(HitPawServerError):
        hook.get_task_status("job-1")
    assert len(post.calls) == max_attempts
    assert len(no_sleep) == max_attempts - 1


def test_retry_after_is_honoured(hook: HitPawHook, script: Script, no_sleep: list[float]) -> None:
    script(Answer(429, b"", {"Retry-After": "12"}), ok_status())
    hook.get_task_status("job-1")
    assert no_sleep == [12.0]


def test_retry_is_logged(
    hook: HitPawHook, script: Script, no_sleep: list[float], capfd: Any, caplog: Any
) -> None:
    """The log is visible to the leak check: without this, a silent log would make that check vacuous."""
    script(Answer(503, b""), ok_status())
    hook.get_task_status("job-1")
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    sys.stdout.write(out)
    assert "retrying in" in text
    assert "HTTP 503" in text


# --- HitPawHook: the session ----------------------------------------------------------------------


def test_one_session_serves_every_call(hook: HitPawHook, script: Script) -> None:
    post = script(ok_submission(), ok_status(), Answer(500, b""), ok_status("COMPLETED"), default=ok_status())
    hook.submit_segmentation(IMAGE_URL)
    hook.get_task_status("job-1")
    hook.get_task_status("job-1")
    assert len(post.calls) == 4
    assert all(call.session is hook.session for call in post.calls)
    assert hook.get_conn() is hook.session


def test_session_does_not_retry_on_its_own(hook: HitPawHook) -> None:
    for prefix in ("https://", "http://"):
        assert hook.session.get_adapter(prefix + "api.example.com").max_retries.total == 0


def test_close_closes_the_session(hook: HitPawHook, mocker: Any) -> None:
    session = hook.session
    close = mocker.spy(session, "close")
    hook.close()
    close.assert_called_once_with()
    assert hook.session is not session, "a closed session must not be used again"


def test_close_without_session_opens_none(hitpaw_conn: str, mocker: Any) -> None:
    opened = mocker.spy(requests, "Session")
    HitPawHook(hitpaw_conn).close()
    opened.assert_not_called()


def test_context_manager_closes_the_session(hitpaw_conn: str, mocker: Any) -> None:
    with HitPawHook(hitpaw_conn) as hook:
        close = mocker.spy(hook.session, "close")
    close.assert_called_once_with()


@pytest.mark.parametrize(
    ("extra", "verify"),
    [
        pytest.param({}, True, id="default"),
        pytest.param({"ca_bundle": "{bundle}"}, "{bundle}", id="ca-bundle"),
        pytest.param({"extra__hitpaw__ca_bundle": "{bundle}"}, "{bundle}", id="ca-bundle-airflow2-form"),
        pytest.param({"verify": False}, False, id="verify-false"),
        pytest.param({"verify": "false"}, False, id="verify-false-string"),
    ],
)
def test_session_verify_follows_the_connection(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, extra: dict[str, Any], verify: bool | str
) -> None:
    bundle = tmp_path / "hitpaw.pem"
    bundle.write_text("not parsed by requests until a TLS handshake")
    extra = {k: (v.format(bundle=bundle) if isinstance(v, str) else v) for k, v in extra.items()}
    verify = verify.format(bundle=bundle) if isinstance(verify, str) else verify
    conn_id = set_connection(monkeypatch, "hitpaw_tls", host=BASE_URL, password=SECRET_KEY, extra=extra)
    with HitPawHook(conn_id) as hook:
        assert hook.session.verify == verify


# --- HitPawHook: the connection -------------------------------------------------------------------


def test_connection_from_environment(hook: HitPawHook) -> None:
    assert hook.hitpaw_conn_id == CONN_ID
    assert hook.settings.base_url == BASE_URL
    assert hook.settings.api_key == SECRET_KEY


def test_default_connection_id(hitpaw_conn: str) -> None:
    assert HitPawHook().settings.base_url == BASE_URL


def test_connection_without_host_uses_hitpaw(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = set_connection(monkeypatch, "hitpaw_prod", password=SECRET_KEY)
    assert HitPawHook(conn_id).settings.base_url == _api.DEFAULT_BASE_URL


def test_connection_without_password_names_the_field(monkeypatch: pytest.MonkeyPatch, script: Script) -> None:
    post = script()
    conn_id = set_connection(monkeypatch, "hitpaw_nokey", host=BASE_URL)
    with pytest.raises(HitPawConfigurationError) as info:
        HitPawHook(conn_id).submit_segmentation(IMAGE_URL)
    assert "password" in info.value.field
    assert "password" in str(info.value)
    assert post.calls == []


# --- HitPawHook: wait_for_completion --------------------------------------------------------------


def test_wait_returns_when_completed(hook: HitPawHook, script: Script, fake_clock: list[float]) -> None:
    post = script(ok_status("CONVERTING"), ok_status("CONVERTING"), ok_status("COMPLETED"))
    status = hook.wait_for_completion("job-1", poll_interval=2.5, timeout=60)
    assert status.is_completed
    assert status.mask_url == f"{BASE_URL}/results/job-1/mask.png"
    assert len(post.calls) == 3
    assert fake_clock == [2.5, 2.5]


def test_wait_keeps_polling_an_unknown_status(
    hook: HitPawHook, script: Script, fake_clock: list[float]
) -> None:
    post = script(ok_status("QUEUED"), ok_status("COMPLETED"))
    assert hook.wait_for_completion("job-1", poll_interval=3, timeout=60).is_completed
    assert len(post.calls) == 2


def test_wait_raises_when_the_job_fails(hook: HitPawHook, script: Script, fake_clock: list[float]) -> None:
    script(ok_status("CONVERTING"), ok_status("ERROR", "job-bad"))
    with pytest.raises(HitPawJobFailedError, match="job-bad"):
        hook.wait_for_completion("job-bad", poll_interval=3, timeout=60)


def test_wait_raises_at_the_deadline(hook: HitPawHook, script: Script, fake_clock: list[float]) -> None:
    post = script(default=ok_status("CONVERTING"))
    with pytest.raises(HitPawTimeoutError) as info:
        hook.wait_for_completion("job-1", poll_interval=3, timeout=10)
    # Polls at 0, 3, 6, 9 and 10 s: the last pause is cut to the time that is left.
    assert fake_clock == [3, 3, 3, 1]
    assert len(post.calls) == 5
    assert "CONVERTING" in str(info.value)
    assert info.value.retryable is False


def test_wait_with_zero_timeout_polls_once(hook: HitPawHook, script: Script, fake_clock: list[float]) -> None:
    post = script(default=ok_status("CONVERTING"))
    with pytest.raises(HitPawTimeoutError):
        hook.wait_for_completion("job-1", poll_interval=3, timeout=0)
    assert len(post.calls) == 1


def test_transient_faults_do_not_end_the_wait(
    hitpaw_conn: str, script: Script, fake_clock: list[float]
) -> None:
    # With two attempts per call, each pair of faults makes one whole poll fail.
    post = script(
        Answer(500, b""),
        Answer(500, b""),
        ok_status("CONVERTING"),
        Answer(raises=requests.ConnectionError("reset")),
        Answer(raises=requests.Timeout("slow")),
        ok_status("COMPLETED"),
    )
    hook = HitPawHook(hitpaw_conn, retry_policy=_api.RetryPolicy(max_attempts=2))
    assert hook.wait_for_completion("job-1", poll_interval=3, timeout=600).is_completed
    assert len(post.calls) == 6


@pytest.mark.parametrize(("code", "http_status", "family"), PERMANENT_ERRORS)
def test_permanent_error_ends_the_wait(
    hook: HitPawHook,
    script: Script,
    fake_clock: list[float],
    code: int,
    http_status: int,
    family: type[HitPawError],
) -> None:
    post = script(ok_status("CONVERTING"), default=hitpaw_error(code, http_status))
    with pytest.raises(family):
        hook.wait_for_completion("job-1", poll_interval=3, timeout=600)
    assert len(post.calls) == 2


# --- HitPawHook: test_connection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(hitpaw_error(100400002, 400, "Bad Request"), True, id="probe-job-unknown-key-accepted"),
        pytest.param(ok_status("CONVERTING", hooks._PROBE_JOB_ID), True, id="probe-answered"),
        pytest.param(hitpaw_error(110400000, 400, "api_key is not valid"), False, id="bad-key"),
        pytest.param(hitpaw_error(100401000, 401, "Token is expired"), False, id="expired-key"),
        pytest.param(hitpaw_error(100400000, 400, "No access"), False, id="no-access"),
        pytest.param(Answer(raises=requests.ConnectionError("refused")), False, id="server-down"),
        pytest.param(Answer(503, b"<html>down</html>"), False, id="server-failing"),
        pytest.param(
            Answer(raises=requests.ConnectionError(f"refused while sending Apikey: {SECRET_KEY}")),
            False,
            id="server-down-error-quotes-key",
        ),
    ],
)
def test_test_connection(
    hook: HitPawHook, script: Script, no_sleep: list[float], answer: Answer, expected: bool
) -> None:
    post = script(default=answer)
    ok, message = hook.test_connection()
    assert ok is expected
    assert message
    assert SECRET_KEY not in message
    assert post.calls[0].url == STATUS_URL
    assert post.calls[0].json == {"job_id": hooks._PROBE_JOB_ID}
    # The form's button answers at once: a host that is down once took 12.6 s of retries to say so.
    assert len(post.calls) == 1
    assert no_sleep == []


def test_test_connection_refuses_a_key_with_a_line_break_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, script: Script
) -> None:
    post = script()
    conn_id = set_connection(monkeypatch, "hitpaw_crlf", host=BASE_URL, password=f"{SECRET_KEY}\r\nX: 1")
    ok, message = HitPawHook(conn_id).test_connection()
    assert ok is False
    assert "password (API key)" in message
    assert SECRET_KEY not in message
    assert post.calls == []


def test_test_connection_names_the_refusal(hook: HitPawHook, script: Script) -> None:
    script(default=hitpaw_error(110400000, 400, "api_key is not valid"))
    assert "api_key is not valid" in hook.test_connection()[1]


def test_test_connection_without_key_fails(monkeypatch: pytest.MonkeyPatch, script: Script) -> None:
    post = script()
    conn_id = set_connection(monkeypatch, "hitpaw_nokey", host=BASE_URL)
    ok, message = HitPawHook(conn_id).test_connection()
    assert post.calls == []
    assert ok is False
    assert "password" in message


# --- secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exception",
    [
        pytest.param(
            requests.ConnectionError(f"HTTPSConnectionPool headers={{'Apikey': '{SECRET_KEY}'}}"), id="conn"
        ),
        pytest.param(requests.Timeout(f"timed out sending {SECRET_KEY}"), id="timeout"),
    ],
)
def test_network_error_text_is_scrubbed(
    hook: HitPawHook, script: Script, no_sleep: list[float], exception: Exception
) -> None:
    script(default=Answer(raises=exception))
    with pytest.raises(HitPawConnectionError) as info:
        hook.get_task_status("job-1")
    assert SECRET_KEY not in str(info.value)
    assert SECRET_KEY not in repr(info.value)
    assert "***" in str(info.value)
    assert type(exception).__name__ in str(info.value)


def test_answer_body_echoing_the_key_is_scrubbed(hook: HitPawHook, script: Script) -> None:
    script(default=Answer(400, f"<html>Bad request. Headers: Apikey: {SECRET_KEY}</html>".encode()))
    with pytest.raises(HitPawInvalidRequestError) as info:
        hook.get_task_status("job-1")
    assert SECRET_KEY not in str(info.value)


# --- connection form and provider info ------------------------------------------------------------


def test_ui_field_behaviour() -> None:
    behaviour = HitPawHook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port", "extra"}
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert _api.DEFAULT_BASE_URL in behaviour["placeholders"]["host"]


@pytest.mark.parametrize("hook_class", [HitPawHook, HitPawAsyncHook], ids=["sync", "async"])
def test_both_hooks_serve_the_hitpaw_connection_type(hook_class: type[HitPawHook | HitPawAsyncHook]) -> None:
    assert hook_class.conn_type == "hitpaw"
    assert hook_class.hook_name == "HitPaw"
    assert hook_class.conn_name_attr == "hitpaw_conn_id"
    assert hook_class.default_conn_name == CONN_ID


def test_connection_form_widgets_on_airflow_2() -> None:
    pytest.importorskip("flask_appbuilder")
    pytest.importorskip("wtforms")
    assert set(HitPawHook.get_connection_form_widgets()) == {
        "ca_bundle",
        "allow_insecure_http",
        "max_download_bytes",
        "download_timeout",
    }


def test_provider_info() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-hitpaw"
    assert info["name"] == "HitPaw"
    assert info["description"]
    assert info["versions"] == [__version__]
    [connection_type] = info["connection-types"]
    assert connection_type["connection-type"] == "hitpaw"
    assert connection_type["hook-name"] == "HitPaw"
    module, _, name = connection_type["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is HitPawHook
    assert connection_type["conn-fields"]["ca_bundle"]["label"]


def test_provider_info_form_matches_the_hook() -> None:
    [connection_type] = get_provider_info()["connection-types"]
    declared = connection_type["ui-field-behaviour"]
    behaviour = HitPawHook.get_ui_field_behaviour()
    assert declared == {
        "hidden-fields": behaviour["hidden_fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def test_provider_info_matches_airflow_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import airflow

    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    jsonschema.validate(get_provider_info(), json.loads(schema_path.read_text()))


def test_provider_info_modules_import() -> None:
    info = get_provider_info()
    modules = {
        m
        for kind in ("hooks", "operators", "sensors", "triggers")
        for e in info[kind]
        for m in e["python-modules"]
    }
    assert len(modules) == 4
    for module in modules:
        importlib.import_module(module)


def test_provider_info_loads_no_http_stack() -> None:
    code = (
        "import json, sys\n"
        "from airflow_provider_hitpaw.get_provider_info import get_provider_info\n"
        "get_provider_info()\n"
        "heavy = ('airflow_provider_hitpaw.hooks', 'airflow_provider_hitpaw.hooks.hitpaw',"
        " 'aiohttp', 'requests')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_provider_entry_point() -> None:
    from importlib.metadata import entry_points

    [entry_point] = [
        ep
        for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("airflow_provider_hitpaw")
    ]
    assert entry_point.load() is get_provider_info


# --- HitPawAsyncHook ------------------------------------------------------------------------------


def async_hook_with(client: FakeAsyncClient, **kwargs: Any) -> HitPawAsyncHook:
    """An async hook whose settings and client are already there: nothing is read or opened."""
    hook = HitPawAsyncHook(**kwargs)
    hook._settings = ConnectionSettings(base_url=BASE_URL, api_key=SECRET_KEY)
    hook._client = client  # type: ignore[assignment]
    return hook


ASYNC_CALLS = pytest.mark.parametrize(
    ("call", "url", "body"),
    [
        pytest.param(
            lambda hook: hook.submit_segmentation(IMAGE_URL), SUBMIT_URL, {"file_url": IMAGE_URL}, id="submit"
        ),
        pytest.param(
            lambda hook: hook.get_task_status("job-1"), STATUS_URL, {"job_id": "job-1"}, id="status"
        ),
    ],
)


async def test_async_submit_segmentation() -> None:
    client = FakeAsyncClient([ok_submission("f5007c0b")])
    job = await async_hook_with(client).submit_segmentation(IMAGE_URL)
    assert job == _api.SegmentationJob(job_id="f5007c0b", consume_coins=20)
    assert client.requests == [(SUBMIT_URL, {"file_url": IMAGE_URL})]


async def test_async_get_task_status() -> None:
    client = FakeAsyncClient([ok_status("COMPLETED", "job-7")])
    status = await async_hook_with(client).get_task_status(" job-7 ")
    assert (status.job_id, status.is_completed) == ("job-7", True)
    assert client.requests == [(STATUS_URL, {"job_id": "job-7"})]


@ASYNC_CALLS
@pytest.mark.parametrize(("code", "http_status", "family"), PERMANENT_ERRORS)
async def test_async_permanent_error_raised_after_one_call(
    no_sleep: list[float],
    call: Callable[[HitPawAsyncHook], Any],
    url: str,
    body: dict[str, Any],
    code: int,
    http_status: int,
    family: type[HitPawError],
) -> None:
    client = FakeAsyncClient(default=hitpaw_error(code, http_status, "HitPaw says no"))
    with pytest.raises(family) as info:
        await call(async_hook_with(client))
    assert (info.value.code, info.value.http_status, info.value.message) == (
        code,
        http_status,
        "HitPaw says no",
    )
    assert client.requests == [(url, body)]
    assert no_sleep == []


@pytest.mark.parametrize(("code", "http_status", "family"), PERMANENT_ERRORS)
async def test_async_error_code_under_http_200_is_raised(
    code: int, http_status: int, family: type[HitPawError]
) -> None:
    client = FakeAsyncClient(default=hitpaw_error(code, 200))
    with pytest.raises(family):
        await async_hook_with(client).get_task_status("job-1")
    assert len(client.requests) == 1


@ASYNC_CALLS
@pytest.mark.parametrize(("fault", "family"), ASYNC_TRANSIENT_FAULTS)
async def test_async_transient_fault_retried_max_attempts_times(
    no_sleep: list[float],
    call: Callable[[HitPawAsyncHook], Any],
    url: str,
    body: dict[str, Any],
    fault: Answer,
    family: type[HitPawError],
    request: pytest.FixtureRequest,
) -> None:
    attempts, raised = expected_attempts(request, family)
    client = FakeAsyncClient(default=fault)
    with pytest.raises(raised):
        await call(async_hook_with(client))
    assert client.requests == [(url, body)] * attempts
    assert_default_backoff(no_sleep, retries=attempts - 1)


@pytest.mark.parametrize(("fault", "family"), ASYNC_TRANSIENT_FAULTS)
async def test_async_transient_faults_then_success(
    no_sleep: list[float], fault: Answer, family: type[HitPawError]
) -> None:
    client = FakeAsyncClient([fault, fault, ok_status("COMPLETED")])
    assert (await async_hook_with(client).get_task_status("job-1")).is_completed
    assert len(client.requests) == 3
    assert_default_backoff(no_sleep, retries=2)


async def test_async_retry_policy_decides_the_number_of_calls(no_sleep: list[float]) -> None:
    client = FakeAsyncClient(default=Answer(502, b""))
    hook = async_hook_with(client, retry_policy=_api.RetryPolicy(max_attempts=3))
    with pytest.raises(HitPawServerError):
        await hook.get_task_status("job-1")
    assert len(client.requests) == 3
    assert len(no_sleep) == 2


async def test_async_retry_after_is_honoured(no_sleep: list[float]) -> None:
    client = FakeAsyncClient([Answer(429, b"", {"Retry-After": "9"}), ok_status()])
    await async_hook_with(client).get_task_status("job-1")
    assert no_sleep == [9.0]


async def test_async_one_client_serves_every_call() -> None:
    client = FakeAsyncClient(default=ok_status())
    hook = async_hook_with(client)
    for _ in range(3):
        await hook.get_task_status("job-1")
    assert len(client.requests) == 3
    assert hook._client is client


@pytest.mark.parametrize(
    "exception",
    [
        pytest.param(aiohttp.ClientConnectionError(f"cannot connect, Apikey={SECRET_KEY}"), id="connection"),
        pytest.param(aiohttp.ClientPayloadError(f"payload of {SECRET_KEY}"), id="payload"),
    ],
)
async def test_async_network_error_text_is_scrubbed(no_sleep: list[float], exception: Exception) -> None:
    client = FakeAsyncClient(default=Answer(raises=exception))
    with pytest.raises(HitPawConnectionError) as info:
        await async_hook_with(client).get_task_status("job-1")
    assert SECRET_KEY not in str(info.value)
    assert "***" in str(info.value)


# --- HitPawAsyncHook: client life cycle -----------------------------------------------------------


async def test_async_close_closes_the_client() -> None:
    client = FakeAsyncClient()
    hook = async_hook_with(client)
    await hook.close()
    await hook.close()
    assert client.closed
    assert client.close_calls == 1
    assert hook._client is None


async def test_async_context_manager_closes_on_exit() -> None:
    client = FakeAsyncClient([ok_status()])
    async with async_hook_with(client) as hook:
        await hook.get_task_status("job-1")
        assert not client.closed
    assert client.close_calls == 1


async def test_async_context_manager_closes_on_exception(no_sleep: list[float]) -> None:
    client = FakeAsyncClient(default=hitpaw_error(110400000, 400))
    with pytest.raises(HitPawAuthenticationError):
        async with async_hook_with(client) as hook:
            await hook.get_task_status("job-1")
    assert client.close_calls == 1


async def test_async_real_client_carries_no_key_and_closes() -> None:
    """The key goes with each request, never into a client that other hooks may share."""
    hook = HitPawAsyncHook()
    hook._settings = ConnectionSettings(base_url=BASE_URL, api_key=SECRET_KEY)
    client = await hook._get_client()
    assert isinstance(client, aiohttp.ClientSession)
    assert _api.API_KEY_HEADER not in client.headers
    assert await hook._get_client() is client
    await hook.close()
    assert client.closed


async def test_async_requests_carry_the_key_header() -> None:
    client = FakeAsyncClient(default=ok_status())
    hook = HitPawAsyncHook()
    hook._settings = ConnectionSettings(base_url=BASE_URL, api_key=SECRET_KEY)
    hook._client = client  # type: ignore[assignment]
    await hook.get_task_status("job-1")
    assert client.request_headers == [
        {
            "Content-Type": "application/json",
            _api.API_KEY_HEADER: SECRET_KEY,
            "Accept-Encoding": _transport.ACCEPT_ENCODING,
        }
    ]
    assert SECRET_KEY not in repr(client.requests)


async def test_shared_client_one_per_base_url_closed_by_the_last_user() -> None:
    def shared_hook(base_url: str, key: str) -> HitPawAsyncHook:
        hook = HitPawAsyncHook(share_client=True)
        hook._settings = ConnectionSettings(base_url=base_url, api_key=key)
        return hook

    first, second = shared_hook(BASE_URL, "key-a"), shared_hook(BASE_URL, "key-b")
    other = shared_hook("http://127.0.0.1:9999", "key-a")
    client = await first._get_client()
    assert await second._get_client() is client
    other_client = await other._get_client()
    assert other_client is not client
    await first.close()
    assert not client.closed, "closed while another hook still used it"
    await second.close()
    assert client.closed
    await other.close()
    assert other_client.closed
    # A new user after the last one left gets a fresh client.
    again = shared_hook(BASE_URL, "key-a")
    fresh = await again._get_client()
    assert fresh is not client
    assert not fresh.closed
    await again.close()


async def test_async_missing_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    hook = HitPawAsyncHook()
    hook._settings = ConnectionSettings(BASE_URL, SECRET_KEY, verify=str(tmp_path / "missing-ca.pem"))
    try:
        with pytest.raises(HitPawConfigurationError, match="ca_bundle"):
            await hook.get_task_status("job-1")
    finally:
        await hook.close()


def test_ssl_context_for_each_verify() -> None:
    import ssl

    import certifi

    assert _transport.ssl_context(True) is True
    assert _transport.ssl_context(False) is False
    assert isinstance(_transport.ssl_context(certifi.where()), ssl.SSLContext)


# --- HitPawAsyncHook: the connection --------------------------------------------------------------


async def test_async_connection_read_through_get_async_connection(mocker: Any) -> None:
    from airflow.providers.common.compat.sdk import Connection

    conn = Connection(
        conn_id="hitpaw_x", conn_type="hitpaw", host="https://hitpaw.test:9000", password=SECRET_KEY
    )
    get_async_connection = mocker.patch(
        "airflow.providers.common.compat.connection.get_async_connection",
        new=mocker.AsyncMock(return_value=conn),
    )
    client = FakeAsyncClient(default=ok_status())
    hook = HitPawAsyncHook("hitpaw_x")
    mocker.patch.object(hook, "_get_client", new=mocker.AsyncMock(return_value=client))
    await hook.get_task_status("job-1")
    await hook.get_task_status("job-1")
    get_async_connection.assert_awaited_once_with("hitpaw_x")
    assert [url for url, _ in client.requests] == ["https://hitpaw.test:9000/api/task-status"] * 2


async def test_async_connection_from_environment(hitpaw_conn: str) -> None:
    settings = await HitPawAsyncHook(hitpaw_conn).get_settings()
    assert settings.base_url == BASE_URL
    assert settings.api_key == SECRET_KEY


async def test_async_connection_without_password_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    conn_id = set_connection(monkeypatch, "hitpaw_nokey", host=BASE_URL)
    with pytest.raises(HitPawConfigurationError) as info:
        await HitPawAsyncHook(conn_id).get_task_status("job-1")
    assert "password" in info.value.field


async def test_async_connection_read_once_client_opened_once(hitpaw_conn: str, mocker: Any) -> None:
    hook = HitPawAsyncHook(hitpaw_conn)
    try:
        first = await hook._get_client()
        assert await hook._get_client() is first
    finally:
        await hook.close()
    assert first.closed


async def test_concurrent_first_calls_open_one_client() -> None:
    """A batch trigger's first polls start together: they must share one client, and closing frees it."""
    import asyncio

    hook = HitPawAsyncHook(share_client=True)
    hook._settings = ConnectionSettings(base_url="http://127.0.0.1:9", api_key=SECRET_KEY)
    clients = await asyncio.gather(*(hook._get_client() for _ in range(10)))
    assert len({id(client) for client in clients}) == 1
    await hook.close()
    assert clients[0].closed


async def test_the_async_hook_masks_the_key_without_a_blocking_call(hitpaw_conn: str, mocker: Any) -> None:
    """Airflow 3.3's mask_secret sends a blocking message to the supervisor; on the loop, its async twin."""
    log_module = pytest.importorskip("airflow.sdk.log")
    if not hasattr(log_module, "amask_secret"):
        pytest.skip("amask_secret is Airflow 3.3's (3.0 to 3.2: see the next test)")
    amask = mocker.patch.object(log_module, "amask_secret", new=mocker.AsyncMock())
    blocking = mocker.patch.object(log_module, "mask_secret")
    await HitPawAsyncHook(hitpaw_conn).get_settings()
    amask.assert_awaited_once_with(SECRET_KEY)
    blocking.assert_not_called()


async def test_before_3_3_the_trigger_masks_through_the_triggerers_async_channel(
    hitpaw_conn: str, mocker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 3.0 the synchronous mask_secret raised in the triggerer's loop (every trigger crashed); on 3.1
    it failed silently. Without amask_secret, the triggerer's own async channel carries the message."""
    task_runner = pytest.importorskip("airflow.sdk.execution_time.task_runner")
    log_module = pytest.importorskip("airflow.sdk.log")
    if hasattr(log_module, "amask_secret"):
        pytest.skip("Airflow 3.3 masks with amask_secret (the test above)")
    import airflow.providers.common.compat.sdk as compat_sdk

    comms = mocker.Mock(spec=["asend", "send"])
    comms.asend = mocker.AsyncMock()
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    blocking = mocker.patch.object(compat_sdk, "mask_secret", create=True)
    await HitPawAsyncHook(hitpaw_conn).get_settings()
    assert [call.args[0].value for call in comms.asend.await_args_list] == [SECRET_KEY]
    blocking.assert_not_called()
