"""The HTTP fakes of the hook tests, in one place: scripted answers for requests and aiohttp, and both
hooks behind one face (:class:`HookUnderTest`), so that one test body can run on either.

What ``tests/conftest.py`` already defines (``Answer``, ``FakeAsyncClient``, ``http_response`` and the
body builders) is imported from there and re-exported, not copied: import every fake from here.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal

import requests
from requests.adapters import HTTPAdapter

from airflow_provider_hitpaw._settings import ConnectionSettings
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook, HitPawHook
from tests.conftest import (
    BASE_URL,
    SECRET_KEY,
    Answer,
    FakeAsyncClient,
    FakeAsyncResponse,
    FakeStream,
    envelope,
    http_response,
    status_body,
)

__all__ = [
    "Answer",
    "AnswerQueue",
    "FakeAsyncClient",
    "FakeAsyncResponse",
    "FakeStream",
    "HookUnderTest",
    "PerHook",
    "PostCall",
    "RecordingAsyncClient",
    "Request",
    "ScriptedPost",
    "ScriptedTransport",
    "Sent",
    "envelope",
    "hitpaw_error",
    "http_response",
    "ok",
    "ok_status",
    "ok_submission",
    "oss_error",
    "status_body",
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
