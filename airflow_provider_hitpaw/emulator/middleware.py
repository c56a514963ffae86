"""The middlewares every request goes through: observation (counts, a log line) and fault injection.

Requests to the control endpoint (``/_emulator/*``) are never faulted and not counted in ``requests``.
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

from airflow_provider_hitpaw.emulator.api import ERRORS, INTERNAL_ERROR, RATE_LIMITED, hitpaw_error, hitpaw_ok
from airflow_provider_hitpaw.emulator.control import is_control_path

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
        if not is_control_path(request.path):
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
    """Let a fault rule of ``faults`` replace the request (or, with after_commit, its answer)."""

    def __init__(self, faults: FaultInjector, state: EmulatorState) -> None:
        self._faults = faults
        self._state = state

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The middleware itself."""
        if is_control_path(request.path):
            return await handler(request)
        rule = self._faults.pick(request.path)
        if rule is None:
            return await handler(request)
        log.info("fault %s on %s %s", rule.kind, request.method, request.path)
        if rule.kind == "slow":
            await asyncio.sleep(rule.delay_s)
            return await handler(request)
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
        # missing_fields
        return web.json_response({"code": success_code, "message": "OK", "data": {}})

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
