"""The middlewares every request goes through: observation (counts, a log line) and fault injection.

Requests to the control endpoint (``/_emulator/*``) are never faulted and not counted in ``requests``.
The answers of the hostile kinds (streams, bombs, redirects) are made in :mod:`.hostile`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web

from airflow_provider_hitpaw.emulator import hostile
from airflow_provider_hitpaw.emulator.api import ERRORS, INTERNAL_ERROR, RATE_LIMITED, hitpaw_error, hitpaw_ok
from airflow_provider_hitpaw.emulator.control import is_control_request
from airflow_provider_hitpaw.emulator.faults import ALTERING_KINDS, MISSING

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.faults import FaultInjector, FaultRule
    from airflow_provider_hitpaw.emulator.state import EmulatorState

log = logging.getLogger("airflow_provider_hitpaw.emulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTML_503: Final = (
    "<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>\n"
    "<body><center><h1>503 Service Temporarily Unavailable</h1></center><hr><center>nginx</center>"
    "</body></html>\n"
)


class ObserveMiddleware:
    """Count requests per route and log them; never logs headers (the Apikey) or query strings."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware itself."""
        route = request.match_info.route.resource
        name = route.canonical if route is not None else request.path
        if not is_control_request(request):
            self._state.count_request(name)
        started = time.perf_counter()
        status: int | str = "error"
        try:
            response = await handler(request)
            status = response.status
            if request.transport is None or request.transport.is_closing():
                status = "dropped"
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            log.info(
                "%s %s -> %s (%.1f ms)",
                request.method,
                request.path,
                status,
                (time.perf_counter() - started) * 1e3,
            )


class FaultMiddleware:
    """Let a fault rule replace the request, or its answer (after_commit), or alter its answer.

    :attr:`streams` counts what the streaming kinds sent.
    """

    def __init__(self, faults: FaultInjector, state: EmulatorState) -> None:
        self._faults = faults
        self._state = state
        self.streams = hostile.StreamStats()

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware itself."""
        if is_control_request(request):
            return await handler(request)
        rule = self._faults.pick(request.path)
        if rule is None:
            return await handler(request)
        log.info("fault %s on %s %s", rule.kind, request.method, request.path)
        if rule.kind == "slow":
            await asyncio.sleep(rule.delay_s)
            return await handler(request)
        if rule.kind in ALTERING_KINDS:
            answer = await _answer(handler, request)
            if rule.kind == "drip":
                return await hostile.drip(request, answer, rule.delay_s, rule.size_bytes, self.streams)
            return _altered_submission(rule, answer)
        if rule.after_commit:
            await handler(request)  # the request is carried out; its answer is lost
        return await self._fault_response(rule, request)

    async def _fault_response(self, rule: FaultRule, request: web.Request) -> web.StreamResponse:
        kind = rule.kind
        success_code = 0 if request.path.startswith("/api/oss/") else 200
        if kind == "500":
            return hitpaw_error(INTERNAL_ERROR)
        if kind == "503_html":
            return web.Response(status=503, text=_HTML_503, content_type="text/html")
        if kind == "429":
            response = hitpaw_error(RATE_LIMITED)
            if rule.retry_after is not None:
                seconds = rule.retry_after
                response.headers["Retry-After"] = (
                    str(int(seconds)) if seconds == int(seconds) else str(seconds)
                )
            return response
        if kind == "drop":
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=500)  # never sent: the connection is already gone
        if kind == "non_json":
            return web.Response(status=200, text="not json", content_type="text/plain")
        if kind == "truncated_json":
            full = json.dumps({"code": success_code, "message": "OK", "data": {"job_id": str(uuid.uuid4())}})
            return web.Response(status=200, text=full[: len(full) // 2], content_type="application/json")
        if kind == "code_under_200":
            body = {"code": INTERNAL_ERROR, "message": ERRORS[INTERNAL_ERROR][1], "data": {}}
            return web.json_response(body, status=200)
        if kind == "unknown_status":
            return await self._paused_status(request)
        if kind == "missing_fields":
            return web.json_response({"code": success_code, "message": "OK", "data": {}})
        if kind == "redirect":
            assert rule.location is not None
            return hostile.redirect(rule.location)
        if kind == "png_then_html":
            return hostile.png_then_html()
        if kind == "endless":
            return await hostile.endless(request, rule.stream_bytes, self.streams)
        if kind == "huge_json":
            return await hostile.huge_json(request, rule.stream_bytes, self.streams)
        if kind == "gzip_bomb":
            return await hostile.gzip_bomb_response(request, rule.bomb_bytes)
        raise AssertionError(f"fault kind without an answer: {kind}")

    async def _paused_status(self, request: web.Request) -> web.Response:
        job_id = ""
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            body = json.loads(await request.read())
            if isinstance(body, dict) and isinstance(body.get("job_id"), str):
                job_id = body["job_id"]
        job = self._state.jobs.get(job_id)
        return hitpaw_ok(
            {
                "job_id": job_id,
                "status": "PAUSED",
                "res_url": "",
                "mask_url": "",
                "original_url": job.file_url if job else "",
            }
        )


async def _answer(handler: Handler, request: web.Request) -> web.StreamResponse:
    """The handler's answer, an HTTP error it raises included."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        return exc


def _altered_submission(rule: FaultRule, answer: web.StreamResponse) -> web.StreamResponse:
    """A successful submission answer with ``consume_coins`` or ``job_id`` altered as ``rule`` says.

    The job behind it was created and charged. An error answer passes unchanged.
    """
    if not isinstance(answer, web.Response) or not isinstance(answer.body, bytes):
        return answer
    try:
        body = json.loads(answer.body)
    except ValueError:
        return answer
    if not isinstance(body, dict) or body.get("code") != 200 or not isinstance(body.get("data"), dict):
        return answer
    data = body["data"]
    if rule.kind == "same_job_id":
        if rule.first_job_id is None:
            rule.first_job_id = data.get("job_id")
        else:
            data["job_id"] = rule.first_job_id
    else:
        field = "consume_coins" if rule.kind == "odd_coins" else "job_id"
        if rule.value == MISSING:
            data.pop(field, None)
        else:
            data[field] = rule.value
    return web.json_response(body, status=answer.status)
