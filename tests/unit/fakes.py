"""Every test double of the unit tests, in one place: import each fake from here.

* HTTP: scripted answers for requests and aiohttp, and both hooks behind one face (:class:`HookUnderTest`),
  so that one test body can run on either; :class:`TimedClient`, an aiohttp client that notes when each
  poll was sent.
* Airflow: a task's context (:func:`task_context`, with :class:`FakeTaskInstance`), the task state store
  (:class:`FakeStateStore`), XCom as the extra links read it (:class:`FakeXCom`), and the event a deferral
  that Airflow ended resumes a task with (:data:`TIMED_OUT`).
* Time, chance and interruptions: :class:`FakeClock`, :class:`VirtualTimeLoop` (an event loop whose clock
  jumps to its next timer), :func:`wait_until` (a bounded wait inside a test), :class:`EdgeRng` and
  :class:`Interrupted`.

What ``tests/conftest.py`` already defines (``Answer``, ``FakeAsyncClient``, ``http_response``, the body
builders, ``FakeStateStore``, ``FakeTaskInstance`` and ``task_context``) is imported from there and
re-exported, not copied: the integration tests use them too. Fixtures (``fake_hook``, ``no_sleep``, ...)
stay in ``tests/conftest.py``, where pytest finds them.
"""

from __future__ import annotations

import asyncio
import json
import random
import selectors
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter

from airflow_provider_hitpaw._settings import ConnectionSettings
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook, HitPawHook
from airflow_provider_hitpaw.links import LINKS_XCOM_KEY
from tests.conftest import (
    BASE_URL,
    SECRET_KEY,
    Answer,
    FakeAsyncClient,
    FakeAsyncResponse,
    FakeStateStore,
    FakeStream,
    FakeTaskInstance,
    envelope,
    http_response,
    status_body,
    task_context,
)

__all__ = [
    "TIMED_OUT",
    "Answer",
    "AnswerQueue",
    "EdgeRng",
    "FakeAsyncClient",
    "FakeAsyncResponse",
    "FakeClock",
    "FakeStateStore",
    "FakeStream",
    "FakeTaskInstance",
    "FakeXCom",
    "HookUnderTest",
    "Interrupted",
    "PerHook",
    "PostCall",
    "RecordingAsyncClient",
    "Request",
    "ScriptedPost",
    "ScriptedTransport",
    "Sent",
    "TimedClient",
    "VirtualTimeLoop",
    "envelope",
    "hitpaw_error",
    "http_response",
    "ok",
    "ok_status",
    "ok_submission",
    "oss_error",
    "status_body",
    "task_context",
    "wait_until",
]

Flavour = Literal["sync", "async"]


# --- answers --------------------------------------------------------------------------------------


def ok_submission(job_id: str = "job-1") -> Answer:
    return Answer(200, envelope({"job_id": job_id, "consume_coins": 20}))


def ok_status(status: str = "CONVERTING", job_id: str = "job-1") -> Answer:
    return Answer(200, status_body(job_id, status))


def hitpaw_error(code: int, http_status: int, message: str = "refused") -> Answer:
    return Answer(http_status, envelope(code=code, message=message))


def ok(data: Any) -> Answer:
    """A successful answer of the upload API (its envelope's code is 0)."""
    return Answer(200, json.dumps({"code": 0, "data": data}).encode())


def oss_error(status: int, message: str = "refused") -> Answer:
    return Answer(status, json.dumps({"code": status, "message": message}).encode())


@dataclass(frozen=True)
class PerHook:
    """One fault as each HTTP library gives it: a refused connection is a ``requests.ConnectionError`` to
    the sync hook and an ``aiohttp.ClientConnectionError`` to the async one."""

    sync: Answer
    async_: Answer

    def answer_for(self, flavour: Flavour) -> Answer:
        return self.sync if flavour == "sync" else self.async_


class AnswerQueue:
    """Scripted answers, played in order, then ``default`` for ever; an unscripted request fails the test."""

    def __init__(self, answers: list[Answer], default: Answer | None) -> None:
        self.answers = answers
        self.default = default

    def next_answer(self, url: str) -> Answer:
        answer = self.answers.pop(0) if self.answers else self.default
        assert answer is not None, f"unscripted request to {url}"
        if answer.raises is not None:
            raise answer.raises
        return answer


# --- requests -------------------------------------------------------------------------------------


@dataclass
class PostCall:
    session: requests.Session
    url: str
    json: Any
    kwargs: dict[str, Any]


class ScriptedPost(AnswerQueue):
    """Stands in for ``requests.Session.post``: plays scripted answers, records every request."""

    def __init__(self, answers: list[Answer], default: Answer | None) -> None:
        super().__init__(answers, default)
        self.calls: list[PostCall] = []

    def __call__(
        self, session: requests.Session, url: str, json: Any = None, **kwargs: Any
    ) -> requests.Response:
        self.calls.append(PostCall(session, url, json, kwargs))
        response: requests.Response = http_response(self.next_answer(url))
        return response


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None


class ScriptedTransport(AnswerQueue):
    """Stands in for ``HTTPAdapter.send``: records every prepared request, plays scripted answers."""

    def __init__(self, answers: list[Answer], default: Answer | None) -> None:
        super().__init__(answers, default)
        self.sent: list[Sent] = []

    def __call__(
        self, adapter: HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
        body = request.body
        if hasattr(body, "read"):
            body = body.read()  # type: ignore[union-attr]
        elif isinstance(body, str):
            body = body.encode()
        self.sent.append(Sent(str(request.method), str(request.url), dict(request.headers), body))  # type: ignore[arg-type]
        answer = self.next_answer(str(request.url))
        response: requests.Response = http_response(answer, str(request.url))
        response.request = request
        return response

    def of(self, method: str) -> list[Sent]:
        return [sent for sent in self.sent if sent.method == method]


# --- aiohttp --------------------------------------------------------------------------------------


class RecordingAsyncClient(FakeAsyncClient):
    """:class:`FakeAsyncClient` that also records each request's other arguments (time-outs, redirects)."""

    def __init__(self, answers: list[Answer] | None = None, default: Answer | None = None) -> None:
        super().__init__(answers, default)
        self.kwargs: list[dict[str, Any]] = []

    def post(self, url: str, json: dict[str, Any], **kwargs: Any) -> FakeAsyncResponse:
        self.kwargs.append(kwargs)
        return super().post(url, json, **kwargs)


class TimedClient(FakeAsyncClient):
    """Answers each job's status from a script, and notes when each poll was sent, by the event loop's
    clock (on a :class:`VirtualTimeLoop`, the time the test drives): ``sent_at`` for all, ``polls`` by job."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        super().__init__()
        self.script = script
        self.sent_at: list[float] = []
        self.polls: dict[str, list[float]] = {}

    def post(self, url: str, json: dict[str, Any], **kwargs: Any) -> Any:
        job_id = json["job_id"]
        now = asyncio.get_running_loop().time()
        self.sent_at.append(now)
        self.polls.setdefault(job_id, []).append(now)
        statuses = self.script[job_id]
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        if status.startswith("HTTP"):
            code, http_status = (110400000, 400) if status == "HTTP-bad-key" else (100500000, 500)
            self.default = Answer(status=http_status, body=envelope(code=code, message=status))
        else:
            self.default = Answer(body=status_body(job_id, status))
        return super().post(url, json, **kwargs)


# --- both hooks behind one face -------------------------------------------------------------------


@dataclass
class Request:
    """One API request as either hook sent it.

    ``headers`` are all it went with (the sync hook's session headers, the async hook's per-request
    ones); ``timeout`` is (connect, read); ``transport`` is the session or client it went through.
    """

    url: str
    json: Any
    headers: dict[str, str]
    timeout: tuple[float | None, float | None]
    allow_redirects: bool | None
    kwargs: dict[str, Any]
    transport: Any


class HookUnderTest:
    """A :class:`HitPawHook` or a :class:`HitPawAsyncHook`, with scripted HTTP answers.

    ``call`` runs a method of the hook, a coroutine on this object's own event loop; ``script`` queues
    the answers; ``calls`` is what was sent. The sync hook reads its connection from the environment (the
    ``hitpaw_conn`` fixture) and sends through a scripted ``requests.Session.post``; the async hook starts
    with the same settings and a :class:`RecordingAsyncClient` already in place, unless ``make`` names a
    connection, which it then reads.
    """

    def __init__(self, flavour: Flavour, mocker: Any, conn_id: str) -> None:
        self.flavour: Flavour = flavour
        self.conn_id = conn_id
        self._hooks: list[Any] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._post = ScriptedPost([], None)
        self.client = RecordingAsyncClient()
        if flavour == "sync":
            mocker.patch.object(requests.Session, "post", autospec=True, side_effect=self._post)
            self._session_close = mocker.spy(requests.Session, "close")
        #: What :meth:`within` saw when its body ended: the session or client, and its closes so far.
        self.transport_inside: Any = None
        self.closes_inside: int | None = None

    @property
    def is_async(self) -> bool:
        return self.flavour == "async"

    # --- the hook ---

    def make(self, conn_id: str | None = None, **kwargs: Any) -> Any:
        """A new hook (the one ``hook`` is from now on), built with ``kwargs``."""
        hook: Any
        if not self.is_async:
            hook = HitPawHook(conn_id or self.conn_id, **kwargs)
        elif conn_id is None:
            hook = HitPawAsyncHook(**kwargs)
            hook._settings = ConnectionSettings(base_url=BASE_URL, api_key=SECRET_KEY)
            hook._client = self.client
        else:
            hook = HitPawAsyncHook(conn_id, **kwargs)
            hook._client = self.client
        self._hooks.append(hook)
        return hook

    @property
    def hook(self) -> Any:
        return self._hooks[-1] if self._hooks else self.make()

    def script(self, *answers: Answer | PerHook, default: Answer | PerHook | None = None) -> None:
        """Queue ``answers`` for the next requests, then ``default`` for every later one."""
        played = [self._answer(answer) for answer in answers]
        fallback = None if default is None else self._answer(default)
        queue: Any = self.client if self.is_async else self._post  # both keep .answers and .default
        queue.answers = played
        queue.default = fallback

    def _answer(self, answer: Answer | PerHook) -> Answer:
        return answer.answer_for(self.flavour) if isinstance(answer, PerHook) else answer

    def run(self, value: Any) -> Any:
        """``value`` itself, or what it comes to when it is a coroutine."""
        if not asyncio.iscoroutine(value):
            return value
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(value)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.run(getattr(self.hook, method)(*args, **kwargs))

    def settings(self) -> ConnectionSettings:
        hook = self.hook
        settings: ConnectionSettings = self.run(hook.get_settings()) if self.is_async else hook.settings
        return settings

    # --- what was sent ---

    @property
    def calls(self) -> list[Request]:
        if self.is_async:
            return [
                Request(
                    url=url,
                    json=body,
                    headers=headers,
                    timeout=(kwargs["timeout"].sock_connect, kwargs["timeout"].sock_read),
                    allow_redirects=kwargs.get("allow_redirects"),
                    kwargs=kwargs,
                    transport=self.client,
                )
                for (url, body), headers, kwargs in zip(
                    self.client.requests, self.client.request_headers, self.client.kwargs, strict=True
                )
            ]
        return [
            Request(
                url=call.url,
                json=call.json,
                headers={
                    **{name: str(value) for name, value in call.session.headers.items()},
                    **(call.kwargs.get("headers") or {}),
                },
                timeout=call.kwargs["timeout"],
                allow_redirects=call.kwargs.get("allow_redirects"),
                kwargs=call.kwargs,
                transport=call.session,
            )
            for call in self._post.calls
        ]

    @property
    def transport(self) -> Any:
        """The session (sync) or client (async) the hook holds now; None when it holds none."""
        hook = self.hook
        return hook._client if self.is_async else hook.__dict__.get("session")

    def closes(self, transport: Any) -> int:
        """How many times ``transport`` (a session or a client this object saw) was closed."""
        if self.is_async:
            assert transport is self.client
            closes: int = self.client.close_calls
            return closes
        if transport is None:
            return 0
        calls: list[Any] = self._session_close.call_args_list
        return sum(1 for call in calls if call.args[0] is transport)

    # --- closing ---

    def close(self) -> None:
        self.run(self.hook.close())

    def within(self, method: str, *args: Any) -> Any:
        """Call ``method`` inside ``with hook:`` (sync) or ``async with hook:`` (async); records the
        session or client the hook held when the body ended (``transport_inside``), and how often it had
        been closed by then (``closes_inside``)."""
        hook = self.hook
        if not self.is_async:
            with hook as entered:
                assert entered is hook
                try:
                    return getattr(hook, method)(*args)
                finally:
                    self._note_inside()

        async def body() -> Any:
            async with hook as entered:
                assert entered is hook
                try:
                    return await getattr(hook, method)(*args)
                finally:
                    self._note_inside()

        return self.run(body())

    def _note_inside(self) -> None:
        self.transport_inside = self.transport
        self.closes_inside = self.closes(self.transport_inside)

    def teardown(self) -> None:
        try:
            for hook in self._hooks:
                self.run(hook.close())
        finally:
            if self._loop is not None:
                self._loop.close()


# --- Airflow --------------------------------------------------------------------------------------


class FakeXCom:
    """What tasks pushed, by (dag_id, task_id, run_id, map_index, key)."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str, str, int, str], Any] = {}
        self.reads: list[tuple[Any, str]] = []

    def push(self, key: Any, value: Any, xcom_key: str = LINKS_XCOM_KEY) -> None:
        self.values[(key.dag_id, key.task_id, key.run_id, key.map_index, xcom_key)] = value

    def get_value(self, *, ti_key: Any, key: str, **kwargs: Any) -> Any:
        self.reads.append((ti_key, key))
        return self.values.get((ti_key.dag_id, ti_key.task_id, ti_key.run_id, ti_key.map_index, key))


#: What the scheduler resumes a task with when its deferral timed out: "Trigger timeout" on Airflow 3
#: (TaskDeferralTimeout), "Trigger/execution timeout" on Airflow 2 (TaskDeferralError).
TIMED_OUT = {"error": "Trigger timeout"}


# --- time, chance, interruptions ------------------------------------------------------------------


class FakeClock:
    """A clock that stands still until a test moves ``now``."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on a clock of its own, which jumps to the next timer whenever nothing is ready to run.

    ``await asyncio.sleep(30)`` returns at once with :meth:`time` 30 s on; ``asyncio.wait(..., timeout=)``
    and every other timer follow the same clock, in order. A test so drives all the time that code which
    only waits through the loop sees (point its reading of the time at :meth:`wall`), and how busy the
    machine is changes nothing: no result depends on how long anything really took.

    Work handed to a thread (``asyncio.to_thread``, ``run_in_executor``) is waited for in real time, the
    clock standing still meanwhile, as is anything else when no timer is due. Run coroutines with
    :meth:`run` (bounded on this clock); :meth:`close` also ends the threads and asynchronous generators
    left.
    """

    #: The Unix time at which the clock starts (:meth:`wall`).
    EPOCH = 1_800_000_000.0

    def __init__(self) -> None:
        self._virtual = 0.0
        self._in_threads = 0
        super().__init__(selector=_JumpingSelector(self))

    def time(self) -> float:
        return self._virtual

    def wall(self) -> float:
        """The Unix time on this loop's clock."""
        return self.EPOCH + self._virtual

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        future = super().run_in_executor(executor, func, *args)
        self._in_threads += 1
        future.add_done_callback(self._thread_done)
        return future

    def _thread_done(self, future: asyncio.Future[Any]) -> None:
        self._in_threads -= 1

    def _jump(self, timeout: float | None) -> bool:
        """Whether the selector may move the clock by ``timeout`` instead of waiting for it."""
        return timeout is not None and timeout > 0 and self._in_threads == 0

    def run(self, coro: Any, within: float = 24 * 3600.0) -> Any:
        """What ``coro`` returns. Fails if it has not ended within ``within`` seconds of this loop's clock:
        code that waits for something that never comes fails at once (that time passes at once too)."""

        async def bounded() -> Any:
            bound = asyncio.timeout(within)
            try:
                async with bound:
                    return await coro
            except TimeoutError as err:
                if bound.expired():
                    raise AssertionError(f"still running after {within:g} s of the loop's clock") from err
                raise

        return self.run_until_complete(bounded())

    def close(self) -> None:
        if not self.is_closed():
            self.run_until_complete(self.shutdown_asyncgens())
            self.run_until_complete(self.shutdown_default_executor())
        super().close()


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """The selector of a :class:`VirtualTimeLoop`: asked to wait with nothing to read, it moves the clock."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if not self._loop._jump(timeout):
            return super().select(timeout)  # type: ignore[no-any-return]
        ready: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if not ready:
            assert timeout is not None
            self._loop._virtual += timeout
        return ready


async def wait_until(
    condition: Callable[[], object], task: asyncio.Future[Any], what: str, within: float = 30.0
) -> None:
    """Wait, inside a test's event loop, until ``condition()`` is true while ``task`` (the code under
    test) runs.

    Fails at once, with that error, when ``task`` ends first (it raised, or it was never going to get
    there), and after ``within`` seconds of the loop's clock otherwise: a broken trigger fails the test
    quickly and says why, instead of holding it until pytest's time-out.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if task.done():
            error = None if task.cancelled() else task.exception()
            raise AssertionError(f"the code under test ended before {what}: {error!r}") from error
        if loop.time() >= deadline:
            raise AssertionError(f"no {what} within {within:g} s of the loop's clock")
        await asyncio.wait({task}, timeout=0.01)


class EdgeRng(random.Random):
    """Always draws one end of the interval, so that the bounds of the jitter can be seen exactly."""

    def __init__(self, upper: bool) -> None:
        super().__init__(0)
        self.upper = upper

    def uniform(self, a: float, b: float) -> float:
        return b if self.upper else a


class Interrupted(BaseException):
    """Stands in for AirflowTaskTimeout / AirflowTaskTerminated, raised in the caller's thread."""
