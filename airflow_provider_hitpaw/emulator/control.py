"""The control endpoint, ``/_emulator/*``: what tests and scripts use to steer the emulator over HTTP.

``GET /_emulator/state``, ``GET|POST|DELETE /_emulator/faults``, ``POST /_emulator/keys``,
``/_emulator/config``, ``/_emulator/down``, ``/_emulator/reset``, and ``/_emulator/jobs/{job_id}/`` followed
by ``expire``, ``fail`` or ``finish``. Errors are ``{"error": message}``.

It can change coins, keys and faults and it shows every job, so it only answers a local program that
knows this run's token. :class:`ControlGuard` refuses, before any handler runs and so changing nothing:

* a ``Host`` header that is not a loopback name or address (``localhost``, 127.0.0.0/8, ``[::1]``, with an
  optional port): 403. This defeats DNS rebinding, where a web page in the developer's browser reaches
  127.0.0.1 under its own host name. It holds also when the emulator runs with a ``--public-url``: the
  API answers under that URL, the control endpoint does not.
* a request without the run's token in ``X-Emulator-Token`` (compared in constant time): 403. The token is
  random per run (``secrets.token_urlsafe``) unless given; ``hitpaw-emulator`` prints it on its start-up
  line (:mod:`.startup`), :class:`~.runner.EmulatorServer` has it as ``control_token``.
* a request with a body whose ``Content-Type`` is not ``application/json``: 415. Together with the custom
  header this means a browser can only send a control request after a CORS preflight, which the emulator
  never grants (it sends no CORS headers at all).
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import TYPE_CHECKING, Final

from aiohttp import web

from airflow_provider_hitpaw.emulator.api import read_json_object
from airflow_provider_hitpaw.emulator.faults import FaultSpecError, parse_fault_rules
from airflow_provider_hitpaw.emulator.loopback import is_loopback_host

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_provider_hitpaw.emulator.app import Emulator

CONTROL_PREFIX: Final = "/_emulator"
TOKEN_HEADER: Final = "X-Emulator-Token"  # noqa: S105 (a header name)
_TOKEN: Final = re.compile(r"[A-Za-z0-9_.~-]{16,256}")
_HOST: Final = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]]+))(?::(?P<port>[0-9]{1,5}))?")


def is_control_path(path: str) -> bool:
    """Whether ``path`` is under the control endpoint."""
    return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")


def is_control_request(request: web.Request) -> bool:
    """Whether ``request`` is for the control endpoint: by its path, or by the route it resolved to."""
    resource = request.match_info.route.resource
    return is_control_path(request.path) or (resource is not None and is_control_path(resource.canonical))


def new_control_token() -> str:
    """A fresh random token for one run."""
    return secrets.token_urlsafe(32)


def check_control_token(token: str) -> str:
    """``token`` if it can be a control token (16 to 256 of ``A-Z a-z 0-9 _ . ~ -``), else ValueError."""
    if not isinstance(token, str) or _TOKEN.fullmatch(token) is None:
        raise ValueError("a control token is 16 to 256 characters from A-Z, a-z, 0-9, '_', '.', '~', '-'")
    return token


def is_loopback_host_header(value: str | None) -> bool:
    """Whether a ``Host`` header names this machine: ``localhost``, 127.0.0.0/8 or ``[::1]``, any port."""
    match = _HOST.fullmatch(value or "")
    if match is None:
        return False
    return is_loopback_host(match["ipv6"] or match["name"])


def control_error(message: str, status: int = 400) -> web.Response:
    """The control endpoint's error answer."""
    return web.json_response({"error": message}, status=status)


class ControlGuard:
    """The middleware that lets only loopback, token-carrying, JSON-bodied requests reach ``/_emulator/*``."""

    def __init__(self, token: str) -> None:
        self._token = check_control_token(token).encode()

    @web.middleware
    async def handle(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The middleware itself."""
        if not is_control_request(request):
            return await handler(request)
        if not is_loopback_host_header(request.headers.get("Host")):
            return control_error("the control endpoint only answers to a loopback Host", status=403)
        given = request.headers.get(TOKEN_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._token):
            return control_error(f"missing or wrong {TOKEN_HEADER} header", status=403)
        if request.body_exists and request.content_type != "application/json":
            return control_error("control request bodies must be Content-Type: application/json", status=415)
        return await handler(request)


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
        router.add_post("/_emulator/jobs/{job_id}/finish", self.finish)

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

    async def finish(self, request: web.Request) -> web.Response:
        """End one job's timer now."""
        if not self._emulator.finish_job(request.match_info["job_id"]):
            return control_error("no such job", status=404)
        return web.json_response({"ok": True})
