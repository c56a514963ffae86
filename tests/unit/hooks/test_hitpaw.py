"""HitPawHook (requests) and HitPawAsyncHook (aiohttp) against scripted HTTP answers.

What both hooks do is tested once, on each hook, through the ``hook_under_test`` fixture (its cases end
in ``[sync]`` and ``[async]``); what only one of them has is tested on that one, further down: HitPawHook's
uploads (pre-sign and PUT) in ``TestUploads``, whose requests are caught at the transport instead.

Every test here also checks, on the way out, that the API key reached no log record and no captured output.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw._api import PresignedUpload
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
from airflow_provider_hitpaw.hooks import _transport
from airflow_provider_hitpaw.hooks import hitpaw as hooks
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook, HitPawHook
from tests.conftest import BASE_URL, CONN_ID, SECRET_KEY
from tests.unit.fakes import (
    Answer,
    FakeAsyncClient,
    HookUnderTest,
    PerHook,
    Request,
    ScriptedPost,
    ScriptedTransport,
    hitpaw_error,
    ok,
    ok_status,
    ok_submission,
    oss_error,
)

IMAGE_URL = "https://example.com/shoe.jpg"
SUBMIT_URL = BASE_URL + _api.SUBMIT_PATH
STATUS_URL = BASE_URL + _api.TASK_STATUS_PATH


# --- scripted answers -----------------------------------------------------------------------------

#: The documented permanent errors: each must be raised after exactly one request.
PERMANENT_ERRORS = [
    pytest.param(110400000, 400, HitPawAuthenticationError, id="110400000-bad-key"),
    pytest.param(110402000, 402, HitPawInsufficientCoinsError, id="110402000-coins"),
    pytest.param(100400001, 400, HitPawInvalidRequestError, id="100400001-invalid-url"),
    pytest.param(100401000, 401, HitPawAuthenticationError, id="100401000-expired"),
    pytest.param(100400000, 400, HitPawAuthenticationError, id="100400000-no-access"),
    pytest.param(100400002, 400, HitPawInvalidRequestError, id="100400002-bad-request"),
]


@dataclass(frozen=True)
class Fault:
    """A fault that must be retried, the error family it ends as, and whether the request had left when
    it struck: then HitPaw may have accepted a submission, which is sent once more at most, never five
    times."""

    answer: Answer | PerHook
    family: type[HitPawError]
    may_have_landed: bool


#: Faults that must be retried; a network fault as each HTTP library raises it.
TRANSIENT_FAULTS = [
    pytest.param(
        Fault(
            PerHook(
                Answer(raises=requests.ConnectionError("connection refused")),
                Answer(raises=aiohttp.ClientConnectionError("refused")),
            ),
            HitPawConnectionError,
            may_have_landed=True,
        ),
        id="refused",
    ),
    pytest.param(
        Fault(
            # asyncio.TimeoutError is the builtin TimeoutError since 3.11.
            PerHook(Answer(raises=requests.Timeout("read timed out")), Answer(raises=TimeoutError())),
            HitPawConnectionError,
            may_have_landed=True,
        ),
        id="timeout",
    ),
    pytest.param(
        Fault(
            PerHook(
                Answer(raises=requests.ConnectTimeout("connect")),
                Answer(raises=aiohttp.ConnectionTimeoutError("connect")),
            ),
            HitPawConnectionError,
            may_have_landed=False,
        ),
        id="connect-timeout",
    ),
    pytest.param(
        Fault(
            PerHook(
                # What requests raises when the server hangs up before answering.
                Answer(
                    raises=requests.ConnectionError(
                        ProtocolError(
                            "Connection aborted.",
                            http.client.RemoteDisconnected("Remote end closed connection without response"),
                        )
                    )
                ),
                Answer(raises=aiohttp.ServerDisconnectedError()),
            ),
            HitPawConnectionError,
            may_have_landed=True,
        ),
        id="disconnected",
    ),
    pytest.param(
        Fault(Answer(500, b"<html>Internal Server Error</html>"), HitPawServerError, may_have_landed=True),
        id="http-500",
    ),
    pytest.param(Fault(Answer(503, b""), HitPawServerError, may_have_landed=True), id="http-503-empty"),
    pytest.param(Fault(Answer(429, b""), HitPawRateLimitError, may_have_landed=False), id="http-429"),
    pytest.param(
        Fault(hitpaw_error(100429000, 429), HitPawRateLimitError, may_have_landed=False), id="100429000"
    ),
    pytest.param(
        Fault(hitpaw_error(100500000, 500, "Internal error"), HitPawServerError, may_have_landed=False),
        id="100500000",
    ),
    pytest.param(
        Fault(Answer(200, b"<html>proxy login</html>"), HitPawResponseError, may_have_landed=True),
        id="html-under-200",
    ),
]


@dataclass(frozen=True)
class ApiCall:
    """A call both hooks have, and the request it must send."""

    method: str
    args: tuple[Any, ...]
    url: str
    body: dict[str, Any]

    @property
    def is_submission(self) -> bool:
        return self.method == "submit_segmentation"


SUBMIT = ApiCall("submit_segmentation", (IMAGE_URL,), SUBMIT_URL, {"file_url": IMAGE_URL})
POLL = ApiCall("get_task_status", ("job-1",), STATUS_URL, {"job_id": "job-1"})
API_CALLS = pytest.mark.parametrize("api_call", [SUBMIT, POLL], ids=["submit", "status"])

#: The default back-off ceilings of attempts 1..4 (1 s, 2 s, 4 s, 8 s), each jittered into its upper half.
DEFAULT_CEILINGS = [1.0, 2.0, 4.0, 8.0]


def assert_default_backoff(delays: list[float], retries: int = 4) -> None:
    assert len(delays) == retries
    for delay, ceiling in zip(delays, DEFAULT_CEILINGS, strict=False):
        assert ceiling / 2 <= delay <= ceiling


Script = Callable[..., ScriptedPost]


@pytest.fixture
def script(mocker: Any) -> Script:
    """``script(answer, ..., default=answer)`` makes every requests.Session answer with these (for the
    tests of HitPawHook alone)."""

    def install(*answers: Answer, default: Answer | None = None) -> ScriptedPost:
        post = ScriptedPost(list(answers), default)
        mocker.patch.object(requests.Session, "post", autospec=True, side_effect=post)
        return post

    return install


@pytest.fixture(params=["sync", "async"])
def hook_under_test(request: pytest.FixtureRequest, mocker: Any, hitpaw_conn: str) -> Iterator[HookUnderTest]:
    """Each hook in turn, with scripted answers: see :class:`tests.unit.fakes.HookUnderTest`."""
    under_test = HookUnderTest(request.param, mocker, hitpaw_conn)
    yield under_test
    under_test.teardown()


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


def assert_key_only_in_header(call: Request) -> None:
    assert call.headers[_api.API_KEY_HEADER] == SECRET_KEY
    assert SECRET_KEY not in call.url
    assert SECRET_KEY not in json.dumps(call.json)
    others = {name: value for name, value in call.kwargs.items() if name != "headers"}
    assert SECRET_KEY not in json.dumps(others, default=str)


def sent(hook_under_test: HookUnderTest) -> list[tuple[str, Any]]:
    return [(call.url, call.json) for call in hook_under_test.calls]


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "hitpaw", **fields}))
    return conn_id


# === Both hooks ===================================================================================

# --- successful calls -----------------------------------------------------------------------------


def test_submit_segmentation(hook_under_test: HookUnderTest) -> None:
    hook_under_test.script(ok_submission("f5007c0b"))
    job = hook_under_test.call("submit_segmentation", IMAGE_URL)
    assert job == _api.SegmentationJob(job_id="f5007c0b", consume_coins=20)
    [call] = hook_under_test.calls
    assert (call.url, call.json) == (SUBMIT_URL, {"file_url": IMAGE_URL})
    assert call.timeout == (hooks.DEFAULT_CONNECT_TIMEOUT, hooks.DEFAULT_READ_TIMEOUT)
    assert call.headers["Content-Type"] == "application/json"
    assert_key_only_in_header(call)


def test_get_task_status(hook_under_test: HookUnderTest) -> None:
    hook_under_test.script(ok_status("COMPLETED", "job-7"))
    status = hook_under_test.call("get_task_status", "  job-7 ")
    assert (status.job_id, status.status, status.is_completed) == ("job-7", "COMPLETED", True)
    assert status.res_url == f"{BASE_URL}/results/job-7/cutout.png"
    [call] = hook_under_test.calls
    assert (call.url, call.json) == (STATUS_URL, {"job_id": "job-7"})
    assert_key_only_in_header(call)


def test_requests_carry_the_key_in_its_header_only(hook_under_test: HookUnderTest) -> None:
    """The key goes with each request's headers, and nowhere else."""
    hook_under_test.script(default=ok_status())
    hook_under_test.call("get_task_status", "job-1")
    [call] = hook_under_test.calls
    expected = {
        "Content-Type": "application/json",
        _api.API_KEY_HEADER: SECRET_KEY,
        "Accept-Encoding": _transport.ACCEPT_ENCODING,
    }
    assert {name: call.headers.get(name) for name in expected} == expected
    if hook_under_test.is_async:
        # Per request: the client itself, which other hooks may share, carries no key.
        assert call.headers == expected
    assert SECRET_KEY not in repr(sent(hook_under_test))


def test_timeouts_are_passed_to_the_http_library(hook_under_test: HookUnderTest) -> None:
    hook_under_test.make(connect_timeout=1.5, read_timeout=4.0)
    hook_under_test.script(ok_status())
    hook_under_test.call("get_task_status", "job-1")
    assert hook_under_test.calls[0].timeout == (1.5, 4.0)


@pytest.mark.parametrize("job_id", [pytest.param("", id="empty"), pytest.param("  ", id="blank")])
def test_get_task_status_checks_job_id_before_sending(hook_under_test: HookUnderTest, job_id: str) -> None:
    hook_under_test.script()
    with pytest.raises(HitPawConfigurationError, match="job_id"):
        hook_under_test.call("get_task_status", job_id)
    assert hook_under_test.calls == []


# --- errors and retries ---------------------------------------------------------------------------


@API_CALLS
@pytest.mark.parametrize(("code", "http_status", "family"), PERMANENT_ERRORS)
def test_permanent_error_raised_after_one_call(
    hook_under_test: HookUnderTest,
    no_sleep: list[float],
    api_call: ApiCall,
    code: int,
    http_status: int,
    family: type[HitPawError],
) -> None:
    hook_under_test.script(default=hitpaw_error(code, http_status, "HitPaw says no"))
    with pytest.raises(family) as info:
        hook_under_test.call(api_call.method, *api_call.args)
    assert (info.value.code, info.value.http_status, info.value.message) == (
        code,
        http_status,
        "HitPaw says no",
    )
    assert sent(hook_under_test) == [(api_call.url, api_call.body)]
    assert no_sleep == []


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        pytest.param(110400000, "is not valid", id="110400000-bad-key"),
        pytest.param(100401000, "has expired", id="100401000-expired"),
        pytest.param(100400000, "may not use this API", id="100400000-no-access"),
    ],
)
def test_a_refused_key_names_the_connection_and_that_no_coin_was_spent(
    hook_under_test: HookUnderTest, code: int, problem: str
) -> None:
    """HitPaw's "Unauthorized" named neither the connection nor the key: the task's failure must."""
    hook_under_test.script(default=hitpaw_error(code, 400, "api_key is not valid"))
    with pytest.raises(HitPawAuthenticationError) as raised:
        hook_under_test.call("submit_segmentation", IMAGE_URL)
    text = str(raised.value)
    assert text.startswith(f"HitPaw (code {code}, HTTP 400): HitPaw refused the API key of the Airflow ")
    assert f"connection {CONN_ID!r}" in text
    assert problem in text
    assert "no coin was spent" in text
    assert SECRET_KEY not in text
    assert text.count("HitPaw (") == 1


def test_a_key_refused_on_a_poll_does_not_say_no_coin_was_spent(hook_under_test: HookUnderTest) -> None:
    """A poll asks about a job someone paid for: the refusal names the connection, and claims nothing."""
    hook_under_test.script(default=hitpaw_error(100401000, 401, "Token is expired"))
    with pytest.raises(HitPawAuthenticationError) as raised:
        hook_under_test.call("get_task_status", "job-1")
    assert f"connection {CONN_ID!r}" in str(raised.value)
    assert "coin" not in str(raised.value)


def test_a_key_refused_after_a_job_was_created_does_not_say_no_coin_was_spent(
    hook_under_test: HookUnderTest,
) -> None:
    hook_under_test.script(ok_submission("job-1"), default=hitpaw_error(100401000, 401, "Token is expired"))
    hook_under_test.call("submit_segmentation", IMAGE_URL)
    with pytest.raises(HitPawAuthenticationError) as raised:
        hook_under_test.call("submit_segmentation", "https://example.com/boot.jpg")
    assert f"connection {CONN_ID!r}" in str(raised.value)
    assert "coin" not in str(raised.value)


def test_a_refused_key_survives_pickling_with_its_explanation(hook_under_test: HookUnderTest) -> None:
    import pickle

    hook_under_test.script(default=hitpaw_error(110400000, 400, "api_key is not valid"))
    with pytest.raises(HitPawAuthenticationError) as raised:
        hook_under_test.call("submit_segmentation", IMAGE_URL)
    assert str(pickle.loads(pickle.dumps(raised.value))) == str(raised.value)


@pytest.mark.parametrize(("code", "http_status", "family"), PERMANENT_ERRORS)
def test_error_code_under_http_200_is_raised(
    hook_under_test: HookUnderTest, code: int, http_status: int, family: type[HitPawError]
) -> None:
    hook_under_test.script(default=hitpaw_error(code, 200))
    with pytest.raises(family) as info:
        hook_under_test.call("get_task_status", "job-1")
    assert (info.value.code, info.value.http_status) == (code, 200)
    assert len(hook_under_test.calls) == 1


@API_CALLS
@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
def test_transient_fault_retried_max_attempts_times(
    hook_under_test: HookUnderTest, no_sleep: list[float], api_call: ApiCall, fault: Fault
) -> None:
    raised: type[HitPawError]
    if api_call.is_submission and fault.may_have_landed:
        attempts, raised = 2, HitPawSubmissionUnknownError
    else:
        attempts, raised = 5, fault.family
    hook_under_test.script(default=fault.answer)
    with pytest.raises(raised):
        hook_under_test.call(api_call.method, *api_call.args)
    # Every attempt is the same request, through the same session or client.
    assert sent(hook_under_test) == [(api_call.url, api_call.body)] * attempts
    assert len({id(call.transport) for call in hook_under_test.calls}) == 1
    assert_default_backoff(no_sleep, retries=attempts - 1)


@API_CALLS
@pytest.mark.parametrize("fault", TRANSIENT_FAULTS)
def test_transient_faults_then_success(
    hook_under_test: HookUnderTest, no_sleep: list[float], api_call: ApiCall, fault: Fault
) -> None:
    # Two faults in a row: a status poll rides them out; so does a submission, unless its answer may have
    # been lost after HitPaw accepted it: that is sent once more at most.
    success = ok_submission("job-ok") if api_call.is_submission else ok_status("COMPLETED")
    hook_under_test.script(fault.answer, fault.answer, success)
    if api_call.is_submission and fault.may_have_landed:
        with pytest.raises(HitPawSubmissionUnknownError, match="may have accepted") as raised:
            hook_under_test.call(api_call.method, *api_call.args)
        # Advice a user can follow: HitPaw's API cannot list jobs, its dashboard shows the balance.
        assert "compare the account's coin balance" in str(raised.value)
        assert len(hook_under_test.calls) == 2
        assert_default_backoff(no_sleep, retries=1)
        return
    result = hook_under_test.call(api_call.method, *api_call.args)
    if api_call.is_submission:
        assert result.job_id == "job-ok"
    else:
        assert result.is_completed
    assert len(hook_under_test.calls) == 3
    assert_default_backoff(no_sleep, retries=2)


def test_a_submission_whose_answer_was_lost_once_is_sent_once_more(
    hook_under_test: HookUnderTest, no_sleep: list[float], log_text: Any
) -> None:
    lost = PerHook(Answer(raises=requests.ReadTimeout("read timed out")), Answer(raises=TimeoutError()))
    hook_under_test.script(lost, ok_submission("job-ok"))
    assert hook_under_test.call("submit_segmentation", IMAGE_URL).job_id == "job-ok"
    assert len(hook_under_test.calls) == 2
    assert "charged twice" in log_text()


def test_a_refused_connection_proves_nothing_was_submitted(
    hook_under_test: HookUnderTest, no_sleep: list[float]
) -> None:
    refused = PerHook(
        Answer(
            raises=requests.ConnectionError(
                MaxRetryError(cast(Any, None), "/", NewConnectionError(cast(Any, None), "refused"))
            )
        ),
        Answer(
            raises=aiohttp.ClientConnectorError(
                cast(Any, SimpleNamespace(host="127.0.0.1", port=8090, ssl=True)),
                ConnectionRefusedError(111, "Connection refused"),
            )
        ),
    )
    hook_under_test.script(refused, refused, refused, ok_submission("job-ok"))
    assert hook_under_test.call("submit_segmentation", IMAGE_URL).job_id == "job-ok"
    assert len(hook_under_test.calls) == 4


def test_redirects_are_not_followed(hook_under_test: HookUnderTest, no_sleep: list[float]) -> None:
    """A redirect would carry the key to another host: it is a configuration error, sent nowhere."""
    hook_under_test.script(Answer(307, b"", headers={"Location": "http://elsewhere.test/api"}))
    with pytest.raises(HitPawConfigurationError, match="redirect"):
        hook_under_test.call("get_task_status", "job-1")
    assert len(hook_under_test.calls) == 1
    assert hook_under_test.calls[0].allow_redirects is False


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 7])
def test_retry_policy_decides_the_number_of_calls(
    hook_under_test: HookUnderTest, no_sleep: list[float], max_attempts: int
) -> None:
    hook_under_test.script(default=Answer(502, b"Bad Gateway"))
    hook_under_test.make(retry_policy=_api.RetryPolicy(max_attempts=max_attempts))
    with pytest.raises(HitPawServerError):
        hook_under_test.call("get_task_status", "job-1")
    assert len(hook_under_test.calls) == max_attempts
    assert len(no_sleep) == max_attempts - 1


def test_retry_after_is_honoured(hook_under_test: HookUnderTest, no_sleep: list[float]) -> None:
    hook_under_test.script(
        Answer(429, b"", {"Retry-After": "12"}), Answer(429, b"", {"Retry-After": "9"}), ok_status()
    )
    hook_under_test.call("get_task_status", "job-1")
    assert no_sleep == [12.0, 9.0]


def test_retry_is_logged(
    hook_under_test: HookUnderTest, no_sleep: list[float], capfd: Any, caplog: Any
) -> None:
    """The log is visible to the leak check: without this, a silent log would make that check vacuous."""
    hook_under_test.script(Answer(503, b""), ok_status())
    hook_under_test.call("get_task_status", "job-1")
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    sys.stdout.write(out)
    assert "retrying in" in text
    assert "HTTP 503" in text


# --- the session (sync) or client (async) ---------------------------------------------------------


def test_one_session_or_client_serves_every_call(
    hook_under_test: HookUnderTest, no_sleep: list[float]
) -> None:
    hook_under_test.script(
        ok_submission(), ok_status(), Answer(500, b""), ok_status("COMPLETED"), default=ok_status()
    )
    hook_under_test.call("submit_segmentation", IMAGE_URL)
    for _ in range(3):
        hook_under_test.call("get_task_status", "job-1")
    assert len(hook_under_test.calls) == 5
    held = hook_under_test.transport
    assert held is not None
    assert all(call.transport is held for call in hook_under_test.calls)
    if hook_under_test.is_async:
        assert held is hook_under_test.client
    else:
        assert hook_under_test.hook.get_conn() is held


def test_close_closes_the_session_or_client_once(hook_under_test: HookUnderTest) -> None:
    hook_under_test.script(ok_status())
    hook_under_test.call("get_task_status", "job-1")
    transport = hook_under_test.transport
    assert transport is not None
    hook_under_test.close()
    hook_under_test.close()
    assert hook_under_test.closes(transport) == 1
    assert hook_under_test.transport is None
    if hook_under_test.is_async:
        assert hook_under_test.client.closed
    else:
        assert hook_under_test.hook.session is not transport, "a closed session must not be used again"


def test_context_manager_closes_on_exit(hook_under_test: HookUnderTest) -> None:
    hook_under_test.script(ok_status())
    hook_under_test.within("get_task_status", "job-1")
    assert hook_under_test.closes_inside == 0
    assert hook_under_test.closes(hook_under_test.transport_inside) == 1


def test_context_manager_closes_on_exception(hook_under_test: HookUnderTest, no_sleep: list[float]) -> None:
    hook_under_test.script(default=hitpaw_error(110400000, 400))
    with pytest.raises(HitPawAuthenticationError):
        hook_under_test.within("get_task_status", "job-1")
    assert hook_under_test.closes_inside == 0
    assert hook_under_test.closes(hook_under_test.transport_inside) == 1


# --- the connection -------------------------------------------------------------------------------


def test_connection_from_environment(hook_under_test: HookUnderTest, hitpaw_conn: str) -> None:
    hook_under_test.make(hitpaw_conn)
    assert hook_under_test.hook.hitpaw_conn_id == CONN_ID
    settings = hook_under_test.settings()
    assert settings.base_url == BASE_URL
    assert settings.api_key == SECRET_KEY


def test_connection_without_host_uses_hitpaw(
    hook_under_test: HookUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_under_test.make(set_connection(monkeypatch, "hitpaw_prod", password=SECRET_KEY))
    assert hook_under_test.settings().base_url == _api.DEFAULT_BASE_URL


def test_connection_without_password_names_the_field(
    hook_under_test: HookUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook_under_test.script()
    hook_under_test.make(set_connection(monkeypatch, "hitpaw_nokey", host=BASE_URL))
    with pytest.raises(HitPawConfigurationError) as info:
        hook_under_test.call("submit_segmentation", IMAGE_URL)
    assert "password" in info.value.field
    assert "password" in str(info.value)
    assert hook_under_test.calls == []


# --- secrets --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exception",
    [
        pytest.param(
            PerHook(
                Answer(
                    raises=requests.ConnectionError(
                        f"HTTPSConnectionPool headers={{'Apikey': '{SECRET_KEY}'}}"
                    )
                ),
                Answer(raises=aiohttp.ClientConnectionError(f"cannot connect, Apikey={SECRET_KEY}")),
            ),
            id="connection",
        ),
        pytest.param(
            PerHook(
                Answer(raises=requests.Timeout(f"timed out sending {SECRET_KEY}")),
                Answer(raises=TimeoutError(f"timed out sending {SECRET_KEY}")),
            ),
            id="timeout",
        ),
        pytest.param(
            PerHook(
                Answer(raises=requests.exceptions.ChunkedEncodingError(f"payload of {SECRET_KEY}")),
                Answer(raises=aiohttp.ClientPayloadError(f"payload of {SECRET_KEY}")),
            ),
            id="payload",
        ),
    ],
)
def test_network_error_text_is_scrubbed(
    hook_under_test: HookUnderTest, no_sleep: list[float], exception: PerHook
) -> None:
    hook_under_test.script(default=exception)
    with pytest.raises(HitPawConnectionError) as info:
        hook_under_test.call("get_task_status", "job-1")
    assert SECRET_KEY not in str(info.value)
    assert SECRET_KEY not in repr(info.value)
    assert "***" in str(info.value)
    raised = exception.answer_for(hook_under_test.flavour).raises
    assert type(raised).__name__ in str(info.value)


def test_answer_body_echoing_the_key_is_scrubbed(hook_under_test: HookUnderTest) -> None:
    hook_under_test.script(
        default=Answer(400, f"<html>Bad request. Headers: Apikey: {SECRET_KEY}</html>".encode())
    )
    with pytest.raises(HitPawInvalidRequestError) as info:
        hook_under_test.call("get_task_status", "job-1")
    assert SECRET_KEY not in str(info.value)


# === HitPawHook only ==============================================================================

# --- the session ----------------------------------------------------------------------------------


def test_session_does_not_retry_on_its_own(hook: HitPawHook) -> None:
    for prefix in ("https://", "http://"):
        adapter = hook.session.get_adapter(prefix + "api.example.com")
        assert isinstance(adapter, HTTPAdapter)
        assert adapter.max_retries.total == 0


def test_close_without_session_opens_none(hitpaw_conn: str, mocker: Any) -> None:
    opened = mocker.spy(requests, "Session")
    HitPawHook(hitpaw_conn).close()
    opened.assert_not_called()


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


# --- the connection -------------------------------------------------------------------------------


def test_default_connection_id(hitpaw_conn: str) -> None:
    assert HitPawHook().settings.base_url == BASE_URL


# --- wait_for_completion --------------------------------------------------------------------------


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


# --- test_connection ------------------------------------------------------------------------------


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


def test_test_connection_says_hitpaw_once(hook: HitPawHook, script: Script) -> None:
    """It once said "HitPaw could not be reached: HitPaw: ConnectionError: ..." and "HitPaw refused the API
    key: HitPaw (code ...": one HitPaw is enough, and a refusal names the connection."""
    post = script(default=Answer(raises=requests.ConnectionError("refused")))
    assert hook.test_connection()[1].startswith("HitPaw could not be reached: ConnectionError: ")
    post.default = hitpaw_error(110400000, 400, "api_key is not valid")
    message = hook.test_connection()[1]
    assert message.count("HitPaw (") == 1
    assert f"connection {CONN_ID!r}" in message


def test_test_connection_without_key_fails(monkeypatch: pytest.MonkeyPatch, script: Script) -> None:
    post = script()
    conn_id = set_connection(monkeypatch, "hitpaw_nokey", host=BASE_URL)
    ok, message = HitPawHook(conn_id).test_connection()
    assert post.calls == []
    assert ok is False
    assert "password" in message


# === HitPawHook's uploads =========================================================================

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


UploadScript = Callable[..., ScriptedTransport]


class TestUploads:
    """HitPawHook's uploads (pre-sign, batch pre-sign, PUT) against scripted HTTP answers.

    Requests are caught at the transport (``HTTPAdapter.send``), after requests merged the session's headers
    into them: what is recorded is exactly what would go on the wire. The two fixtures below replace the
    module's of the same name for these tests.
    """

    @pytest.fixture
    def script(self, mocker: Any) -> UploadScript:
        """``script(answer, ..., default=answer)`` makes ``HTTPAdapter.send`` answer with these."""

        def install(*answers: Answer, default: Answer | None = None) -> ScriptedTransport:
            transport = ScriptedTransport(list(answers), default)
            mocker.patch.object(HTTPAdapter, "send", autospec=True, side_effect=transport)
            return transport

        return install

    @pytest.fixture(autouse=True)
    def no_key_in_logs(
        self, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
    ) -> Iterator[None]:
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

    # --- pre-sign ---------------------------------------------------------------------------------

    def test_presign_upload_posts_with_the_key(self, hook: HitPawHook, script: UploadScript) -> None:
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
        self, hook: HitPawHook, script: UploadScript, no_sleep: list[float]
    ) -> None:
        transport = script(
            oss_error(500), Answer(raises=requests.ConnectionError("reset")), ok(item_json("a.jpg"))
        )
        assert hook.presign_upload("a.jpg", "image/jpeg").object_key.endswith("a.jpg")
        assert len(transport.sent) == 3
        assert len(no_sleep) == 2

    def test_presign_upload_auth_error_is_final(
        self, hook: HitPawHook, script: UploadScript, no_sleep: list[float]
    ) -> None:
        transport = script(oss_error(401, "Unauthorized"))
        with pytest.raises(HitPawAuthenticationError):
            hook.presign_upload("a.jpg", "image/jpeg")
        assert len(transport.sent) == 1
        assert no_sleep == []

    def test_a_refused_upload_key_names_the_connection_and_that_no_coin_was_spent(
        self, hook: HitPawHook, script: UploadScript
    ) -> None:
        """What once failed tasks as a bare "HitPaw (HTTP 401): Unauthorized"."""
        script(oss_error(401, "Unauthorized"))
        with pytest.raises(HitPawAuthenticationError) as raised:
            hook.presign_upload("a.jpg", "image/jpeg")
        assert str(raised.value) == (
            "HitPaw (HTTP 401): HitPaw refused the API key of the Airflow connection 'hitpaw_default' "
            "(Unauthorized); check the key in the connection's password. No job had been created in this "
            "try: no coin was spent"
        )

    def test_presign_upload_refuses_bad_input_before_sending(
        self, hook: HitPawHook, script: UploadScript
    ) -> None:
        transport = script()
        with pytest.raises(HitPawConfigurationError):
            hook.presign_upload("anim.gif", "image/gif")
        with pytest.raises(HitPawConfigurationError):
            hook.presign_upload("a.jpg", "image/png")
        assert transport.sent == []

    def test_presign_uploads_splits_into_calls_of_20(self, hook: HitPawHook, script: UploadScript) -> None:
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

    def test_presign_uploads_keeps_per_file_errors(self, hook: HitPawHook, script: UploadScript) -> None:
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
        self, hook: HitPawHook, script: UploadScript, no_sleep: list[float]
    ) -> None:
        transport = script(default=ok({"items": [item_json("a.jpg")]}))
        with pytest.raises(HitPawResponseError):
            hook.presign_uploads([("a.jpg", "image/jpeg"), ("b.jpg", "image/jpeg")])
        assert len(transport.sent) == hook.retry_policy.max_attempts

    def test_presign_uploads_checks_every_file_first(self, hook: HitPawHook, script: UploadScript) -> None:
        transport = script()
        files = [(f"f{i}.png", "image/png") for i in range(25)] + [("bad.bmp", "image/bmp")]
        with pytest.raises(HitPawConfigurationError):
            hook.presign_uploads(files)
        assert transport.sent == []

    def test_presign_uploads_of_nothing_sends_nothing(self, hook: HitPawHook, script: UploadScript) -> None:
        transport = script()
        assert hook.presign_uploads([]) == []
        assert transport.sent == []

    # --- PUT --------------------------------------------------------------------------------------

    def test_upload_puts_bytes_with_the_signed_content_type_and_no_key(
        self, hook: HitPawHook, script: UploadScript
    ) -> None:
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
        self, hook: HitPawHook, script: UploadScript, no_sleep: list[float]
    ) -> None:
        transport = script(
            Answer(503, b"busy"), Answer(raises=requests.ConnectionError("reset")), Answer(200)
        )
        stream = io.BytesIO(b"prefix|" + b"\xff\xd8\xff" + b"x" * 1000)
        stream.seek(len(b"prefix|"))  # the upload starts where the stream is
        hook.upload(presigned(), stream)
        assert [s.body for s in transport.sent] == [b"\xff\xd8\xff" + b"x" * 1000] * 3
        assert len(no_sleep) == 2

    def test_upload_of_a_stream_that_cannot_rewind_is_tried_once(
        self, hook: HitPawHook, script: UploadScript, no_sleep: list[float]
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
        self,
        hook: HitPawHook,
        script: UploadScript,
        no_sleep: list[float],
        status: int,
        family: type[Exception],
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
        self,
        hook: HitPawHook,
        script: UploadScript,
        no_sleep: list[float],
        fault: Answer,
        family: type[Exception],
    ) -> None:
        transport = script(default=fault)
        with pytest.raises(family) as excinfo:
            hook.upload(presigned(), b"\xff\xd8\xffdata")
        assert len(transport.sent) == hook.retry_policy.max_attempts
        assert len(no_sleep) == hook.retry_policy.max_attempts - 1
        assert SIGNATURE not in str(excinfo.value)

    def test_upload_honours_retry_after(
        self, hook: HitPawHook, script: UploadScript, no_sleep: list[float]
    ) -> None:
        script(Answer(429, b"", {"Retry-After": "9"}), Answer(200))
        hook.upload(presigned(), b"\xff\xd8\xffdata")
        assert no_sleep[0] >= 9

    def test_close_closes_the_storage_session(self, hook: HitPawHook, script: UploadScript) -> None:
        script(Answer(200))
        hook.upload(presigned(), b"\xff\xd8\xff")
        storage_session = hook._storage_session
        assert "Apikey" not in storage_session.headers
        hook.close()
        assert "_storage_session" not in hook.__dict__

    def test_an_echoed_signature_stays_out_of_the_error(self, hook: HitPawHook, script: UploadScript) -> None:
        """Storage error pages quote the signature they were given: it is a credential, never shown."""
        from urllib.parse import parse_qsl, urlsplit

        signature = dict(parse_qsl(urlsplit(UPLOAD_URL).query))["Signature"]
        script(Answer(403, f"<Error><SignatureProvided>{signature}</SignatureProvided></Error>".encode()))
        with pytest.raises(HitPawAuthenticationError) as raised:
            hook.upload(presigned(), b"\xff\xd8\xff" + b"\0" * 16)
        assert signature not in str(raised.value)
        assert "***" in str(raised.value)


# === HitPawAsyncHook only =========================================================================

# --- its client -----------------------------------------------------------------------------------


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


# --- the connection -------------------------------------------------------------------------------


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


async def test_on_airflow_2_the_trigger_masks_the_key_in_its_own_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Airflow 2's triggerer runs the triggers in its own process, whose log handlers redact through the
    process's masker: the key must be registered there (no supervisor to tell)."""
    import json
    import secrets

    airflow = pytest.importorskip("airflow")
    if not airflow.__version__.startswith("2."):
        pytest.skip("Airflow 3 masks through its supervisor (the tests above)")
    from airflow.utils.log.secrets_masker import redact

    key = f"hp-{secrets.token_hex(12)}"  # one no earlier test can have masked
    connection = {"conn_type": "hitpaw", "host": BASE_URL, "password": key}
    monkeypatch.setenv("AIRFLOW_CONN_HITPAW_MASKED_HERE", json.dumps(connection))
    assert redact(f"Apikey: {key}") == f"Apikey: {key}"
    await HitPawAsyncHook("hitpaw_masked_here").get_settings()
    assert redact(f"Apikey: {key}") == "Apikey: ***"
