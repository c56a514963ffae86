"""The control endpoint, ``/_emulator/*``: what tests and scripts use to steer the emulator over HTTP.

``GET /_emulator/state``, ``GET|POST|DELETE /_emulator/faults``, ``POST /_emulator/keys``,
``/_emulator/config``, ``/_emulator/down``, ``/_emulator/reset``, ``/_emulator/jobs/{job_id}/expire`` and
``/_emulator/jobs/{job_id}/fail``. Errors are ``{"error": message}``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from airflow_provider_hitpaw.emulator.api import read_json_object
from airflow_provider_hitpaw.emulator.faults import FaultSpecError, parse_fault_rules

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.app import Emulator


def control_error(message: str, status: int = 400) -> web.Response:
    """The control endpoint's error answer."""
    return web.json_response({"error": message}, status=status)


class ControlEndpoint:
    """The handlers of ``/_emulator/*``, acting on one :class:`~.app.Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self._emulator = emulator

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the handlers."""
        router.add_get("/_emulator/state", self.state)
        router.add_get("/_emulator/faults", self.get_faults)
        router.add_post("/_emulator/faults", self.set_faults)
        router.add_delete("/_emulator/faults", self.clear_faults)
        router.add_post("/_emulator/keys", self.keys)
        router.add_post("/_emulator/config", self.config)
        router.add_post("/_emulator/down", self.down)
        router.add_post("/_emulator/reset", self.reset)
        router.add_post("/_emulator/jobs/{job_id}/expire", self.expire)
        router.add_post("/_emulator/jobs/{job_id}/fail", self.fail)

    async def state(self, request: web.Request) -> web.Response:
        """Everything a test may assert on (the same JSON as ``EmulatorServer.state()``)."""
        return web.json_response(self._emulator.snapshot())

    async def get_faults(self, request: web.Request) -> web.Response:
        """The fault rules and how often each kind was served."""
        faults = self._emulator.faults
        return web.json_response({"rules": faults.describe(), "served": faults.served})

    async def set_faults(self, request: web.Request) -> web.Response:
        """Replace the fault rules: a JSON list, or ``{"rules": [...], "seed": N}``."""
        try:
            body = json.loads(await request.read())
            seed = body.get("seed") if isinstance(body, dict) else None
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise FaultSpecError("seed must be an integer")
            self._emulator.set_faults(parse_fault_rules(body), seed=seed)
        except (ValueError, UnicodeDecodeError) as exc:  # FaultSpecError and JSON errors are ValueErrors
            return control_error(str(exc))
        return web.json_response({"rules": self._emulator.faults.describe()})

    async def clear_faults(self, request: web.Request) -> web.Response:
        """Remove every fault rule."""
        self._emulator.faults.clear()
        return web.json_response({"rules": []})

    async def keys(self, request: web.Request) -> web.Response:
        """Register a key: ``{"key": ..., "state": "valid|expired|no_access|invalid"}``."""
        body = await read_json_object(request)
        if body is None or not isinstance(body.get("key"), str) or not isinstance(body.get("state"), str):
            return control_error('expected {"key": str, "state": str}')
        try:
            self._emulator.set_key(body["key"], body["state"])
        except ValueError as exc:
            return control_error(str(exc))
        return web.json_response({"ok": True})

    async def config(self, request: web.Request) -> web.Response:
        """Change job_seconds, coins, result_ttl or force_error."""
        body = await read_json_object(request)
        if body is None:
            return control_error("expected a JSON object")
        try:
            self._emulator.configure(**body)
        except ValueError as exc:
            return control_error(str(exc))
        return web.json_response(self._emulator.snapshot()["config"] | {"coins": self._emulator.state.coins})

    async def down(self, request: web.Request) -> web.StreamResponse:
        """Refuse connections for ``{"seconds": N}`` (this answer is still sent)."""
        body = await read_json_object(request)
        seconds = body.get("seconds") if body is not None else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return control_error('expected {"seconds": number >= 0}')
        self._emulator.go_down(float(seconds), spare=request.protocol)
        response = web.json_response({"down_for": seconds})
        response.force_close()
        return response

    async def reset(self, request: web.Request) -> web.Response:
        """Back to the start-up state."""
        await self._emulator.reset()
        return web.json_response({"ok": True})

    async def expire(self, request: web.Request) -> web.Response:
        """Make one job and its files disappear now."""
        if not self._emulator.expire_job(request.match_info["job_id"]):
            return control_error("no such job", status=404)
        return web.json_response({"ok": True})

    async def fail(self, request: web.Request) -> web.Response:
        """Make one job end in ERROR."""
        if not self._emulator.fail_job(request.match_info["job_id"]):
            return control_error("no such job", status=404)
        return web.json_response({"ok": True})
