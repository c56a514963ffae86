"""The HitPaw emulator: an aiohttp application that answers like HitPaw's API, and a thread runner for it.

Everything HitPaw documents (``/work/shared/hitpaw-api.md``) is reproduced as written: the endpoints, the
``Apikey`` header, the JSON envelope, every error ``code`` with its HTTP status and message, the flat 20
coins per job, ``CONVERTING`` -> ``COMPLETED``/``ERROR``, results kept 8 days, the OSS pre-signed upload
whose success code is ``0`` and whose errors are plain HTTP statuses.

Where HitPaw's documentation is silent, this emulator chose (and tests rely on it):

* ``task-status`` for an unknown or expired ``job_id`` answers ``100400002`` / HTTP 400 "Bad Request".
* The key is checked first, then the body: a bad key with a bad body is ``110400000``. A body that is not
  a JSON object, or lacks a field / has it with a non-string type, is ``100400002``. ``Content-Type`` is
  not enforced.
* A ``file_url`` that is not ``http``/``https``, has no host, contains whitespace or is over 2048
  characters is ``100400001`` at submission; one that is well-formed but cannot be fetched only shows as
  a job ending in ``ERROR`` (that is what a client sees from the real service too).
* The coins are charged at submission, also for jobs that end in ``ERROR``; nothing is refunded.
* The image is fetched for real, only over http/https, with redirects followed (5 at most), a 10 s
  time-out and a 50 MB cap. By default only loopback hosts are fetched (the emulator runs on build
  machines that must not reach out); ``allow_remote_fetch`` lifts that. URLs under the emulator's own
  ``public_url`` are fetched from the emulator directly, so a ``--public-url`` for another network
  still works for its samples and uploads.
* A job is ``CONVERTING`` for ``job_seconds`` after submission *and* until its processing is done; its
  ``finished_at`` is the later of the two, and the result TTL runs from there. ``ERROR`` jobs expire too.
* Result files are public (no ``Apikey``), like HitPaw's CDN links; they 404 before ``COMPLETED``.
* OSS: authentication failures of any kind (unknown, expired or no-access key) are HTTP 401; a
  ``content_type`` that does not match the extension is HTTP 400; ``expire_seconds`` must be an integer.
  In a batch, a file that fails validation does not fail the batch: it is counted in ``failed`` and its
  item is ``{"filename": ..., "error": ...}``. Error bodies are ``{"code": <HTTP status>, "message": ...}``.
  Uploaded objects are kept 7 days. A PUT may overwrite the object until its URL expires.
* Fault rules never touch ``/_emulator/*``; requests to it are not counted in ``requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp import web

from airflow_provider_hitpaw.emulator.faults import (
    FaultInjector,
    FaultRule,
    FaultSpecError,
    parse_fault_rules,
)
from airflow_provider_hitpaw.emulator.imaging import (
    ImageError,
    SegmentationResult,
    sample_images,
    segment_bytes,
)

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("airflow_provider_hitpaw.emulator")

# HitPaw's error codes (hitpaw-api.md section 3), with their HTTP status and message.
NO_ACCESS: Final = 100400000
INVALID_URL: Final = 100400001
BAD_REQUEST: Final = 100400002
TOKEN_EXPIRED: Final = 100401000
RATE_LIMITED: Final = 100429000
INTERNAL_ERROR: Final = 100500000
INVALID_API_KEY: Final = 110400000
COINS_NOT_ENOUGH: Final = 110402000
ERRORS: Final[Mapping[int, tuple[int, str]]] = {
    NO_ACCESS: (400, "No access"),
    INVALID_URL: (400, "Invalid URL"),
    BAD_REQUEST: (400, "Bad Request"),
    TOKEN_EXPIRED: (401, "Token is expired"),
    RATE_LIMITED: (429, "Too Many Requests"),
    INTERNAL_ERROR: (500, "Internal error"),
    INVALID_API_KEY: (400, "api_key is not valid"),
    COINS_NOT_ENOUGH: (402, "The coins are not enough"),
}

JOB_COST: Final = 20
DEFAULT_RESULT_TTL: Final = 8 * 24 * 3600.0
UPLOAD_TTL: Final = 7 * 24 * 3600.0
MAX_URL_LENGTH: Final = 2048
MAX_FETCH_BYTES: Final = 50 * 1024 * 1024
MAX_REDIRECTS: Final = 5

#: Key states that can be registered; "invalid" removes a key (it then gets 110400000).
KEY_STATES: Final = frozenset({"valid", "expired", "no_access", "invalid"})
#: What the OSS upload accepts, and the content type each extension must be uploaded with.
UPLOAD_CONTENT_TYPES: Final[Mapping[str, str]] = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
}
OSS_EXPIRE_DEFAULT: Final = 3600
OSS_EXPIRE_MIN: Final = 60
OSS_EXPIRE_MAX: Final = 7200
OSS_BATCH_MAX: Final = 20
_EXPIRE_MESSAGE: Final = f"expire_seconds must be an integer from {OSS_EXPIRE_MIN} to {OSS_EXPIRE_MAX}"

PATH_SUBMIT: Final = "/api/image-segmentation"
PATH_STATUS: Final = "/api/task-status"
PATH_PRESIGN: Final = "/api/oss/presign-put"
PATH_PRESIGN_BATCH: Final = "/api/oss/presign-put/batch"
RESULT_FILES: Final = ("cutout.png", "mask.png")

_HTML_503: Final = (
    "<!DOCTYPE html>\n<html><head><title>503 Service Temporarily Unavailable</title></head>\n"
    "<body><center><h1>503 Service Temporarily Unavailable</h1></center><hr><center>nginx</center>"
    "</body></html>\n"
)

T = TypeVar("T")


@dataclass
class EmulatorConfig:
    """Start-up settings; ``reset`` brings the emulator back to exactly these."""

    api_key: str = "hitpaw-emulator-key"
    host: str = "127.0.0.1"
    port: int = 0
    job_seconds: float = 3.0
    coins: int = 100_000
    result_ttl: float = DEFAULT_RESULT_TTL
    faults: list[FaultRule] = field(default_factory=list)
    public_url: str | None = None
    seed: int = 0
    allow_remote_fetch: bool = False
    fetch_timeout: float = 10.0
    max_fetch_bytes: int = MAX_FETCH_BYTES
    #: Serve the public port over TLS with this context (the private port for own fetches stays http).
    ssl_context: ssl.SSLContext | None = None


@dataclass
class Job:
    """One segmentation job. Its status is derived from the clock, so nothing has to tick."""

    job_id: str
    file_url: str
    submitted_at: float
    ready_at: float
    processed_at: float | None = None
    result: SegmentationResult | None = None
    error: str | None = None
    force_error: bool = False

    def status(self, now: float) -> str:
        """CONVERTING until both the configured duration is over and the processing is done."""
        if self.processed_at is None or now < self.ready_at:
            return "CONVERTING"
        return "COMPLETED" if self.result is not None and not self.force_error else "ERROR"

    @property
    def finished_at(self) -> float | None:
        """When the job left CONVERTING (it may lie in the future while the timer runs)."""
        return None if self.processed_at is None else max(self.ready_at, self.processed_at)


@dataclass
class StoredObject:
    """A file PUT through a pre-signed URL."""

    content_type: str
    data: bytes
    stored_at: float


@dataclass
class Presign:
    """What a pre-signed upload URL allows: one key, one content type, until ``expire_at``."""

    content_type: str
    expire_at: int


class FetchError(Exception):
    """The job's image could not be fetched; the job ends in ERROR."""


def hitpaw_error(code: int, message: str | None = None) -> web.Response:
    """HitPaw's error envelope with the HTTP status its table gives for ``code``."""
    status, default_message = ERRORS[code]
    return web.json_response({"code": code, "message": message or default_message, "data": {}}, status=status)


def hitpaw_ok(data: Mapping[str, Any]) -> web.Response:
    """HitPaw's success envelope (code 200)."""
    return web.json_response({"code": 200, "message": "OK", "data": dict(data)})


def oss_error(status: int, message: str) -> web.Response:
    """The upload API's errors: a plain HTTP status, echoed in the body."""
    return web.json_response({"code": status, "message": message, "data": {}}, status=status)


def validate_file_url(url: str) -> bool:
    """Whether ``url`` is a well-formed http(s) URL HitPaw would accept for fetching."""
    if not url or len(url) > MAX_URL_LENGTH or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Emulator:
    """The emulator's state and its aiohttp application.

    All state lives on one event loop and is only touched from it (the HTTP handlers, and
    :class:`EmulatorServer`, which hops onto the loop), so nothing needs a lock.
    """

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._secret = secrets.token_bytes(32)
        self.port = config.port
        self.faults = FaultInjector(config.faults, seed=config.seed)
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._internal_listener: asyncio.AbstractServer | None = None
        self._internal_port = 0
        self._relisten: asyncio.TimerHandle | None = None
        self._down_until: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0
        self._set_initial_state()

    def _set_initial_state(self) -> None:
        self.coins = self.config.coins
        self.job_seconds = self.config.job_seconds
        self.result_ttl = self.config.result_ttl
        self.force_error = False
        self.keys: dict[str, str] = {self.config.api_key: "valid"}
        self.jobs: dict[str, Job] = {}
        self.objects: dict[str, StoredObject] = {}
        self.presigns: dict[str, Presign] = {}
        self.request_counts: dict[str, int] = {}

    # ----------------------------------------------------------------------------------------------
    # life cycle

    @property
    def internal_url(self) -> str:
        """Where the emulator is reachable from itself (https when it serves TLS)."""
        scheme = "https" if self.config.ssl_context is not None else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base of every URL the emulator hands out (``--public-url`` or the listening address)."""
        return (self.config.public_url or self.internal_url).rstrip("/")

    @property
    def listening(self) -> bool:
        """False while the emulator plays dead after ``down``."""
        return self._listener is not None

    async def start(self) -> None:
        """Listen; with port 0 the system picks one and :attr:`port` tells which."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.fetch_timeout, connect=5),
            trust_env=False,  # never through a proxy from the environment
        )
        try:
            # The emulator fetches its own samples and uploads through a second, private listener, so
            # that those connections do not show in the connection counts a test may assert on.
            server = self._runner.server
            assert server is not None
            self._internal_listener = await asyncio.get_running_loop().create_server(
                server, self.config.host, 0, backlog=128
            )
            self._internal_port = self._internal_listener.sockets[0].getsockname()[1]
            await self._listen()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop listening, end jobs in progress, close every connection and the HTTP client."""
        if self._relisten is not None:
            self._relisten.cancel()
            self._relisten = None
        await self._cancel_tasks()  # first: in-flight fetches are connections to ourselves
        if self._session is not None:
            await self._session.close()
            self._session = None
        listeners = [srv for srv in (self._listener, self._internal_listener) if srv is not None]
        self._stop_listening()
        if self._internal_listener is not None:
            self._internal_listener.close()
            self._internal_listener = None
        web_server = self._runner.server if self._runner is not None else None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for listener in listeners:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.wait_closed(), 1.0)
        # A connection accepted just before the listener closed may only now reach connection_made, and
        # transports close their sockets in a callback of the next loop iteration: give both a few
        # iterations, or a caller that closes the loop right after (asyncio.run) would leak sockets.
        for _ in range(3):
            await asyncio.sleep(0)
        if web_server is not None:
            for handler in web_server.connections:
                handler.force_close()
            for _ in range(3):
                await asyncio.sleep(0)

    def _protocol_factory(self) -> asyncio.BaseProtocol:
        # asyncio calls this once per accepted TCP connection: the cheapest exact connection count.
        assert self._runner is not None
        assert self._runner.server is not None
        self.connections_accepted += 1
        return self._runner.server()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self._protocol_factory,
            self.config.host,
            self.port,
            reuse_address=True,
            backlog=128,
            ssl=self.config.ssl_context,
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        self._down_until = None

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _public_handlers(self) -> list[web.RequestHandler]:
        """Connections to the public port (not the private one used for the emulator's own fetches)."""
        if self._runner is None or self._runner.server is None:
            return []
        handlers = []
        for handler in self._runner.server.connections:
            transport = handler.transport
            sockname = transport.get_extra_info("sockname") if transport is not None else None
            if sockname is not None and sockname[1] != self._internal_port:
                handlers.append(handler)
        return handlers

    def _close_connections(self, spare: object = None) -> None:
        # A crash cuts every connection, in-flight requests included; ``spare`` (the one carrying a
        # /_emulator/down request) is closed after its answer instead.
        for handler in self._public_handlers():
            if handler is spare:
                handler.close()
            else:
                handler.force_close()

    def open_connections(self) -> int:
        """TCP connections currently open to the emulator's public port."""
        return len(self._public_handlers())

    def go_down(self, seconds: float, spare: object = None) -> None:
        """Refuse connections for ``seconds`` (listening socket closed), then listen on the same port."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        if self._relisten is not None:
            self._relisten.cancel()
        self._stop_listening()
        self._close_connections(spare)
        self._down_until = self._clock() + seconds
        self._relisten = asyncio.get_running_loop().call_later(seconds, self._spawn_relisten)

    def _spawn_relisten(self) -> None:
        self._relisten = None
        self._spawn(self.come_up())

    async def come_up(self) -> None:
        """Listen again now (after :meth:`go_down`); retries briefly if the port is not free yet."""
        if self._relisten is not None:
            self._relisten.cancel()
            self._relisten = None
        for _ in range(50):
            if self._listener is not None:
                return
            try:
                await self._listen()
                log.info("HitPaw emulator listening again on %s", self.internal_url)
                return
            except OSError as exc:
                log.warning("cannot listen again on port %s yet: %s", self.port, exc)
                await asyncio.sleep(0.1)
        log.error("giving up listening again on port %s", self.port)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ----------------------------------------------------------------------------------------------
    # control operations (called on the loop, by /_emulator/* and by EmulatorServer)

    def sweep(self) -> None:
        """Forget jobs whose results outlived the TTL, and uploads older than 7 days."""
        now = self._clock()
        for job_id, job in list(self.jobs.items()):
            finished = job.finished_at
            if finished is not None and now >= finished and now - finished >= self.result_ttl:
                del self.jobs[job_id]
        for key, obj in list(self.objects.items()):
            if now - obj.stored_at >= UPLOAD_TTL:
                del self.objects[key]
        for key, presign in list(self.presigns.items()):
            if now > presign.expire_at and key not in self.objects:
                del self.presigns[key]

    def snapshot(self) -> dict[str, Any]:
        """Everything a test may want to assert on, as JSON-ready data."""
        self.sweep()
        now = self._clock()
        return {
            "coins": self.coins,
            "jobs": [
                {
                    "job_id": job.job_id,
                    "status": job.status(now),
                    "file_url": job.file_url,
                    "submitted_at": job.submitted_at,
                    "finished_at": job.finished_at if job.status(now) != "CONVERTING" else None,
                    "error": job.error,
                }
                for job in self.jobs.values()
            ],
            "requests": dict(self.request_counts),
            "faults_served": dict(self.faults.served),
            "faults": self.faults.describe(),
            "connections": {"accepted": self.connections_accepted, "open": self.open_connections()},
            "listening": self.listening,
            "down_until": self._down_until,
            "uploads": len(self.objects),
            "config": {
                "job_seconds": self.job_seconds,
                "result_ttl": self.result_ttl,
                "force_error": self.force_error,
                "base_url": self.base_url,
            },
        }

    def set_faults(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        """Replace the fault rules (the random source restarts from the seed)."""
        self.faults.set_rules(rules, seed=seed)

    def set_key(self, key: str, state: str) -> None:
        """Register ``key`` as valid, expired or no_access, or remove it with "invalid"."""
        if state not in KEY_STATES:
            raise ValueError(f"key state must be one of {sorted(KEY_STATES)}")
        if not key:
            raise ValueError("key must be a non-empty string")
        if state == "invalid":
            self.keys.pop(key, None)
        else:
            self.keys[key] = state

    def configure(self, **settings: Any) -> None:
        """Change job_seconds, coins, result_ttl or force_error (new jobs end ERROR) while running."""
        unknown = set(settings) - {"job_seconds", "coins", "result_ttl", "force_error"}
        if unknown:
            raise ValueError(f"unknown settings: {sorted(unknown)}")
        for name in ("job_seconds", "result_ttl"):
            if name in settings:
                value = settings[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name} must be a number >= 0")
                setattr(self, name, float(value))
        if "coins" in settings:
            coins = settings["coins"]
            if isinstance(coins, bool) or not isinstance(coins, int) or coins < 0:
                raise ValueError("coins must be an integer >= 0")
            self.coins = coins
        if "force_error" in settings:
            if not isinstance(settings["force_error"], bool):
                raise ValueError("force_error must be true or false")
            self.force_error = settings["force_error"]

    def expire_job(self, job_id: str) -> bool:
        """Make a job and its files disappear now, as if its TTL were over."""
        return self.jobs.pop(job_id, None) is not None

    def fail_job(self, job_id: str) -> bool:
        """Make a job end in ERROR (when its time is up), whatever its image."""
        job = self.jobs.get(job_id)
        if job is None:
            return False
        job.force_error = True
        return True

    async def reset(self) -> None:
        """Back to start-up values: jobs, coins, keys, faults, counters, uploads; listening again."""
        await self._cancel_tasks()
        self._set_initial_state()
        self.faults = FaultInjector(self.config.faults, seed=self.config.seed)
        self.connections_accepted = 0
        if self._listener is None and self._runner is not None:
            await self.come_up()

    # ----------------------------------------------------------------------------------------------
    # the application

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[self._observe_middleware, self._fault_middleware],
            client_max_size=MAX_FETCH_BYTES + 1024,
        )
        app.router.add_post(PATH_SUBMIT, self._submit)
        app.router.add_post(PATH_STATUS, self._task_status)
        app.router.add_post(PATH_PRESIGN, self._presign)
        app.router.add_post(PATH_PRESIGN_BATCH, self._presign_batch)
        app.router.add_get("/results/{job_id}/{name}", self._result_file)
        app.router.add_put("/oss/upload/{key:.+}", self._upload)
        app.router.add_get("/oss/objects/{key:.+}", self._object)
        app.router.add_get("/samples", self._samples)
        app.router.add_get("/samples/", self._samples)
        app.router.add_get("/samples/{name}", self._sample)
        app.router.add_get("/_emulator/state", self._ctl_state)
        app.router.add_get("/_emulator/faults", self._ctl_get_faults)
        app.router.add_post("/_emulator/faults", self._ctl_set_faults)
        app.router.add_delete("/_emulator/faults", self._ctl_clear_faults)
        app.router.add_post("/_emulator/keys", self._ctl_keys)
        app.router.add_post("/_emulator/config", self._ctl_config)
        app.router.add_post("/_emulator/down", self._ctl_down)
        app.router.add_post("/_emulator/reset", self._ctl_reset)
        app.router.add_post("/_emulator/jobs/{job_id}/expire", self._ctl_expire)
        app.router.add_post("/_emulator/jobs/{job_id}/fail", self._ctl_fail)
        return app

    @web.middleware
    async def _observe_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Count requests per route and log them.

        Never logs headers (the Apikey) or query strings (upload signatures).
        """
        route = request.match_info.route.resource
        name = route.canonical if route is not None else request.path
        if not request.path.startswith("/_emulator/"):
            self.request_counts[name] = self.request_counts.get(name, 0) + 1
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

    @web.middleware
    async def _fault_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Let a fault rule replace the request (or, with after_commit, its answer)."""
        if request.path.startswith("/_emulator/"):
            return await handler(request)
        rule = self.faults.pick(request.path)
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
        job = self.jobs.get(job_id)
        return hitpaw_ok(
            {
                "job_id": job_id,
                "status": "PAUSED",
                "res_url": "",
                "mask_url": "",
                "original_url": job.file_url if job else "",
            }
        )

    # ----------------------------------------------------------------------------------------------
    # HitPaw API

    def _key_error(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("Apikey", "")
        state = self.keys.get(key) if key else None
        if state is None:
            return hitpaw_error(INVALID_API_KEY)
        if state == "expired":
            return hitpaw_error(TOKEN_EXPIRED)
        if state == "no_access":
            return hitpaw_error(NO_ACCESS)
        return None

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any] | None:
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None

    async def _submit(self, request: web.Request) -> web.Response:
        self.sweep()
        if (error := self._key_error(request)) is not None:
            return error
        body = await self._json_object(request)
        if body is None or not isinstance(body.get("file_url"), str):
            return hitpaw_error(BAD_REQUEST)
        file_url: str = body["file_url"]
        if not validate_file_url(file_url):
            return hitpaw_error(INVALID_URL)
        if self.coins < JOB_COST:
            return hitpaw_error(COINS_NOT_ENOUGH)
        self.coins -= JOB_COST
        now = self._clock()
        job = Job(str(uuid.uuid4()), file_url, now, now + self.job_seconds, force_error=self.force_error)
        self.jobs[job.job_id] = job
        self._spawn(self._process(job))
        return hitpaw_ok({"job_id": job.job_id, "consume_coins": JOB_COST})

    async def _task_status(self, request: web.Request) -> web.Response:
        self.sweep()
        if (error := self._key_error(request)) is not None:
            return error
        body = await self._json_object(request)
        if body is None or not isinstance(body.get("job_id"), str):
            return hitpaw_error(BAD_REQUEST)
        job = self.jobs.get(body["job_id"])
        if job is None:
            return hitpaw_error(BAD_REQUEST)
        status = job.status(self._clock())
        done = status == "COMPLETED"
        return hitpaw_ok(
            {
                "job_id": job.job_id,
                "status": status,
                "res_url": f"{self.base_url}/results/{job.job_id}/cutout.png" if done else "",
                "mask_url": f"{self.base_url}/results/{job.job_id}/mask.png" if done else "",
                "original_url": job.file_url,
            }
        )

    async def _process(self, job: Job) -> None:
        """Fetch and segment one job's image; any failure becomes the job's ERROR."""
        try:
            data = await self._fetch(job.file_url)
            job.result = await asyncio.to_thread(segment_bytes, data)
        except (FetchError, ImageError) as exc:
            job.error = str(exc)
        except Exception as exc:  # a bug here must fail the job, not hang it in CONVERTING
            log.exception("processing job %s failed", job.job_id)
            job.error = f"internal error: {exc}"
        job.processed_at = self._clock()
        log.info("job %s processed: %s", job.job_id, "ok" if job.error is None else job.error)

    def _fetch_target(self, url: str) -> str:
        """Own URLs (under base_url or the listening address) go to the private listener."""
        for base in {self.base_url, self.internal_url}:
            if url == base or url.startswith(base + "/"):
                return f"http://{self.config.host}:{self._internal_port}" + url[len(base) :]
        return url

    async def _fetch(self, url: str) -> bytes:
        assert self._session is not None
        target = self._fetch_target(url)
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchError(f"cannot fetch {parts.scheme or 'scheme-less'} URL")
            if not self.config.allow_remote_fetch and not _is_loopback(parts.hostname):
                raise FetchError("fetching non-loopback hosts is disabled (allow_remote_fetch)")
            try:
                async with self._session.get(target, allow_redirects=False) as response:
                    if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                        target = self._fetch_target(urljoin(target, response.headers["Location"]))
                        continue
                    if not 200 <= response.status < 300:
                        raise FetchError(f"fetching the image answered HTTP {response.status}")
                    if (response.content_length or 0) > self.config.max_fetch_bytes:
                        raise FetchError("image larger than the size limit")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.content.iter_chunked(256 * 1024):
                        size += len(chunk)
                        if size > self.config.max_fetch_bytes:
                            raise FetchError("image larger than the size limit")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise FetchError(f"fetching the image failed: {type(exc).__name__}: {exc}") from exc
        raise FetchError("too many redirects")

    async def _result_file(self, request: web.Request) -> web.Response:
        self.sweep()
        job = self.jobs.get(request.match_info["job_id"])
        name = request.match_info["name"]
        if job is None or name not in RESULT_FILES or job.status(self._clock()) != "COMPLETED":
            raise web.HTTPNotFound()
        assert job.result is not None
        data = job.result.cutout_png if name == "cutout.png" else job.result.mask_png
        return web.Response(body=data, content_type="image/png")

    # ----------------------------------------------------------------------------------------------
    # OSS pre-signed upload

    def _oss_key_error(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("Apikey", "")
        if not key or self.keys.get(key) != "valid":
            return oss_error(401, "Unauthorized")
        return None

    def _signature(self, object_key: str, content_type: str, expire_at: int) -> str:
        message = f"PUT\n{content_type}\n{expire_at}\n{object_key}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    @staticmethod
    def _expire_seconds(body: Mapping[str, Any]) -> int | None:
        value = body.get("expire_seconds", OSS_EXPIRE_DEFAULT)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        return value if OSS_EXPIRE_MIN <= value <= OSS_EXPIRE_MAX else None

    def _presign_one(self, spec: Any, expire_seconds: int) -> dict[str, Any] | str:
        """A pre-signed upload for one file, or the reason it was refused."""
        if not isinstance(spec, Mapping):
            return "file entry must be an object"
        filename = spec.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            return "missing filename"
        ext = filename.rsplit(".", 1)[1].lower() if "." in filename else ""
        content_type = UPLOAD_CONTENT_TYPES.get(ext)
        if content_type is None:
            return f"extension not allowed: {ext or '(none)'}"
        asked = spec.get("content_type")
        if asked is not None and (not isinstance(asked, str) or asked.strip().lower() != content_type):
            return f"content_type does not match the extension (expected {content_type})"
        now = self._clock()
        day = datetime.fromtimestamp(now, UTC).strftime("%Y/%m/%d")
        object_key = f"uploads/{day}/{secrets.token_hex(8)}.{ext}"
        expire_at = int(now + expire_seconds)
        self.presigns[object_key] = Presign(content_type, expire_at)
        signature = self._signature(object_key, content_type, expire_at)
        return {
            "upload_url": (
                f"{self.base_url}/oss/upload/{object_key}?Expires={expire_at}&Signature={signature}"
            ),
            "access_url": f"{self.base_url}/oss/objects/{object_key}",
            "object_key": object_key,
            "content_type": content_type,
            "expire_at": expire_at,
        }

    async def _presign(self, request: web.Request) -> web.Response:
        self.sweep()
        if (error := self._oss_key_error(request)) is not None:
            return error
        body = await self._json_object(request)
        if body is None:
            return oss_error(400, "body must be a JSON object")
        expire_seconds = self._expire_seconds(body)
        if expire_seconds is None:
            return oss_error(400, _EXPIRE_MESSAGE)
        item = self._presign_one(body, expire_seconds)
        if isinstance(item, str):
            return oss_error(400, item)
        return web.json_response({"code": 0, "data": item})

    async def _presign_batch(self, request: web.Request) -> web.Response:
        self.sweep()
        if (error := self._oss_key_error(request)) is not None:
            return error
        body = await self._json_object(request)
        if body is None:
            return oss_error(400, "body must be a JSON object")
        files = body.get("files")
        if not isinstance(files, list) or not 1 <= len(files) <= OSS_BATCH_MAX:
            return oss_error(400, f"files must be a list of 1 to {OSS_BATCH_MAX} entries")
        expire_seconds = self._expire_seconds(body)
        if expire_seconds is None:
            return oss_error(400, _EXPIRE_MESSAGE)
        items: list[dict[str, Any]] = []
        failed = 0
        for spec in files:
            item = self._presign_one(spec, expire_seconds)
            name = spec.get("filename") if isinstance(spec, Mapping) else None
            if isinstance(item, str):
                failed += 1
                items.append({"filename": name, "error": item})
            else:
                items.append({"filename": name, **item})
        data = {"total": len(files), "success": len(files) - failed, "failed": failed, "items": items}
        return web.json_response({"code": 0, "data": data})

    async def _upload(self, request: web.Request) -> web.Response:
        object_key = request.match_info["key"]
        presign = self.presigns.get(object_key)
        try:
            expires = int(request.query.get("Expires", ""))
        except ValueError:
            return oss_error(403, "missing or malformed Expires")
        signature = request.query.get("Signature", "")
        if presign is None or expires != presign.expire_at:
            return oss_error(403, "no such pre-signed upload")
        expected = self._signature(object_key, presign.content_type, presign.expire_at)
        if not hmac.compare_digest(signature, expected):
            return oss_error(403, "signature does not match")
        if self._clock() > presign.expire_at:
            return oss_error(403, "the upload URL has expired")
        content_type = request.headers.get("Content-Type", "")
        if content_type.strip().lower() != presign.content_type:
            return oss_error(403, f"Content-Type must be {presign.content_type}, as signed")
        data = await request.read()
        self.objects[object_key] = StoredObject(presign.content_type, data, self._clock())
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest().upper()}"'})  # noqa: S324

    async def _object(self, request: web.Request) -> web.Response:
        self.sweep()
        obj = self.objects.get(request.match_info["key"])
        if obj is None:
            raise web.HTTPNotFound()
        return web.Response(body=obj.data, content_type=obj.content_type)

    # ----------------------------------------------------------------------------------------------
    # samples

    async def _samples(self, request: web.Request) -> web.Response:
        samples = await asyncio.to_thread(sample_images)
        listing = [
            {
                "name": s.name,
                "url": f"{self.base_url}/samples/{s.name}",
                "content_type": s.content_type,
                "bytes": len(s.data),
                "width": s.width,
                "height": s.height,
                "subject_pixels": s.subject_pixels,
                "expected_status": s.expected_status,
                "description": s.description,
            }
            for s in samples.values()
        ]
        return web.json_response({"samples": listing})

    async def _sample(self, request: web.Request) -> web.Response:
        sample = (await asyncio.to_thread(sample_images)).get(request.match_info["name"])
        if sample is None:
            raise web.HTTPNotFound()
        return web.Response(body=sample.data, content_type=sample.content_type)

    # ----------------------------------------------------------------------------------------------
    # control endpoint

    @staticmethod
    def _ctl_error(message: str, status: int = 400) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def _ctl_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _ctl_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response({"rules": self.faults.describe(), "served": self.faults.served})

    async def _ctl_set_faults(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            seed = body.get("seed") if isinstance(body, dict) else None
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise FaultSpecError("seed must be an integer")
            self.set_faults(parse_fault_rules(body), seed=seed)
        except (ValueError, UnicodeDecodeError) as exc:  # FaultSpecError and JSON errors are ValueErrors
            return self._ctl_error(str(exc))
        return web.json_response({"rules": self.faults.describe()})

    async def _ctl_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return web.json_response({"rules": []})

    async def _ctl_keys(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if body is None or not isinstance(body.get("key"), str) or not isinstance(body.get("state"), str):
            return self._ctl_error('expected {"key": str, "state": str}')
        try:
            self.set_key(body["key"], body["state"])
        except ValueError as exc:
            return self._ctl_error(str(exc))
        return web.json_response({"ok": True})

    async def _ctl_config(self, request: web.Request) -> web.Response:
        body = await self._json_object(request)
        if body is None:
            return self._ctl_error("expected a JSON object")
        try:
            self.configure(**body)
        except ValueError as exc:
            return self._ctl_error(str(exc))
        return web.json_response(self.snapshot()["config"] | {"coins": self.coins})

    async def _ctl_down(self, request: web.Request) -> web.StreamResponse:
        body = await self._json_object(request)
        seconds = body.get("seconds") if body is not None else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            return self._ctl_error('expected {"seconds": number >= 0}')
        self.go_down(float(seconds), spare=request.protocol)
        response = web.json_response({"down_for": seconds})
        response.force_close()
        return response

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        await self.reset()
        return web.json_response({"ok": True})

    async def _ctl_expire(self, request: web.Request) -> web.Response:
        if not self.expire_job(request.match_info["job_id"]):
            return self._ctl_error("no such job", status=404)
        return web.json_response({"ok": True})

    async def _ctl_fail(self, request: web.Request) -> web.Response:
        if not self.fail_job(request.match_info["job_id"]):
            return self._ctl_error("no such job", status=404)
        return web.json_response({"ok": True})


# --------------------------------------------------------------------------------------------------
# running it in a thread


FaultLike = FaultRule | Mapping[str, Any] | str


def _to_rules(rules: Iterable[FaultLike]) -> list[FaultRule]:
    return parse_fault_rules([r.to_dict() if isinstance(r, FaultRule) else r for r in rules])


class EmulatorServer:
    """The emulator on its own event loop in a background thread, for tests and scripts.

    ``with EmulatorServer(job_seconds=0.2) as emu: requests.post(emu.base_url + "/api/...")``.
    The control helpers act on the loop directly rather than over HTTP, so they also work while the
    emulator is :meth:`down`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        job_seconds: float = 3.0,
        coins: int = 100_000,
        result_ttl: float = DEFAULT_RESULT_TTL,
        faults: Iterable[FaultLike] = (),
        public_url: str | None = None,
        seed: int = 0,
        allow_remote_fetch: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = EmulatorConfig(
            api_key=api_key or f"emu-key-{secrets.token_hex(8)}",
            host=host,
            port=port,
            job_seconds=job_seconds,
            coins=coins,
            result_ttl=result_ttl,
            faults=_to_rules(faults),
            public_url=public_url,
            seed=seed,
            allow_remote_fetch=allow_remote_fetch,
            ssl_context=ssl_context,
        )
        self._emulator: Emulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None

    @property
    def api_key(self) -> str:
        """The key that is valid at start-up (and after every reset)."""
        return self.config.api_key

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (https with ``ssl_context``), where this machine reaches the emulator
        (no trailing slash)."""
        return self._running().internal_url

    @property
    def public_url(self) -> str:
        """The base of the URLs in answers (res_url, upload_url...): public_url if given, else base_url."""
        return self._running().base_url

    @property
    def port(self) -> int:
        """The port actually listened on."""
        return self._running().port

    def url(self, path: str) -> str:
        """An absolute URL on the emulator."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def sample_url(self, name: str = "shoe.jpg") -> str:
        """The URL of one of the built-in sample images (see ``GET /samples/``)."""
        return self.url(f"samples/{name}")

    def _running(self) -> Emulator:
        if self._emulator is None:
            raise RuntimeError("the emulator is not running; call start() first")
        return self._emulator

    def start(self) -> Self:
        """Start listening; returns once requests can be served."""
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            emulator = Emulator(self.config)
            self._stop_event = asyncio.Event()
            try:
                await emulator.start()
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            self._loop = asyncio.get_running_loop()
            self._emulator = emulator
            ready.set()
            try:
                await self._stop_event.wait()
            finally:
                await emulator.stop()

        self._thread = threading.Thread(
            target=asyncio.run, args=(serve(),), name="hitpaw-emulator", daemon=True
        )
        self._thread.start()
        ready.wait(timeout=30)
        if failure or self._emulator is None:
            self._thread.join(timeout=5)
            self._thread = None
            raise RuntimeError("the HitPaw emulator did not start") from (failure[0] if failure else None)
        return self

    def stop(self) -> None:
        """Stop the server and its thread; idempotent."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None:
            return
        if loop is not None and stop_event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=10)
        self._thread = self._loop = self._stop_event = None
        self._emulator = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, fn: Callable[[Emulator], Coroutine[Any, Any, T]]) -> T:
        emulator = self._running()
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(fn(emulator), self._loop).result(timeout=30)

    def _call_sync(self, fn: Callable[[Emulator], T]) -> T:
        async def run(emulator: Emulator) -> T:
            return fn(emulator)

        return self._call(run)

    # control helpers, mirroring /_emulator/*

    def state(self) -> dict[str, Any]:
        """The same JSON as ``GET /_emulator/state``."""
        return self._call_sync(lambda e: e.snapshot())

    def set_faults(self, rules: Iterable[FaultLike], seed: int | None = None) -> None:
        """Replace the fault rules; each is a FaultRule, its JSON form, or a ``--fault`` string."""
        parsed = _to_rules(rules)
        self._call_sync(lambda e: e.set_faults(parsed, seed=seed))

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self._call_sync(lambda e: e.faults.clear())

    def reset(self) -> None:
        """Jobs, coins, keys, faults, counters and uploads back to start-up values; listening again."""
        self._call(lambda e: e.reset())

    def down(self, seconds: float) -> None:
        """Refuse connections for ``seconds``, then listen again on the same port."""
        self._call_sync(lambda e: e.go_down(seconds))

    def up(self) -> None:
        """End a :meth:`down` early."""
        self._call(lambda e: e.come_up())

    def set_key(self, key: str, state: str = "valid") -> None:
        """Register another key: "valid", "expired" (100401000), "no_access" (100400000) or "invalid"."""
        self._call_sync(lambda e: e.set_key(key, state))

    def configure(
        self,
        *,
        job_seconds: float | None = None,
        coins: int | None = None,
        result_ttl: float | None = None,
        force_error: bool | None = None,
    ) -> None:
        """Change settings while running (``reset`` restores the start-up ones)."""
        given = {
            "job_seconds": job_seconds,
            "coins": coins,
            "result_ttl": result_ttl,
            "force_error": force_error,
        }
        settings = {name: value for name, value in given.items() if value is not None}
        self._call_sync(lambda e: e.configure(**settings))

    def expire_job(self, job_id: str) -> bool:
        """Make a job and its files disappear now; False if there was no such job."""
        return self._call_sync(lambda e: e.expire_job(job_id))

    def fail_job(self, job_id: str) -> bool:
        """Make a job end in ERROR; False if there was no such job."""
        return self._call_sync(lambda e: e.fail_job(job_id))
