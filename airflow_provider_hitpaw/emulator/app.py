"""The :class:`Emulator`: wires state, handlers and middlewares into one aiohttp application, and listens.

It owns the listener life cycle: a public listener (optionally TLS) whose accepted connections are
counted, a private plain listener for the emulator's own fetches of its samples and uploads (so those do
not show in the counts), and ``down``/``up`` to play an outage on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_provider_hitpaw.emulator.api import HitPawApi
from airflow_provider_hitpaw.emulator.control import (
    ControlEndpoint,
    ControlGuard,
    check_control_token,
    new_control_token,
)
from airflow_provider_hitpaw.emulator.faults import FaultInjector, FaultRule
from airflow_provider_hitpaw.emulator.fetch import MAX_FETCH_BYTES, ImageFetcher
from airflow_provider_hitpaw.emulator.imaging import sample_images
from airflow_provider_hitpaw.emulator.middleware import FaultMiddleware, ObserveMiddleware
from airflow_provider_hitpaw.emulator.oss import OssApi
from airflow_provider_hitpaw.emulator.state import DEFAULT_RESULT_TTL, EmulatorState

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger("airflow_provider_hitpaw.emulator")


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
    #: What ``/_emulator/*`` requests must send in ``X-Emulator-Token``; None: a random one per run.
    control_token: str | None = None


class Emulator:
    """The emulator's state, its aiohttp application and its listeners.

    All state lives on one event loop and is only touched from it (the HTTP handlers, and
    :class:`EmulatorServer`, which hops onto the loop), so nothing needs a lock.
    """

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.port = config.port
        #: The token of this run's control endpoint (see :mod:`.control`); it survives :meth:`reset`.
        self.control_token = (
            new_control_token() if config.control_token is None else check_control_token(config.control_token)
        )
        self.state = EmulatorState(
            api_key=config.api_key,
            coins=config.coins,
            job_seconds=config.job_seconds,
            result_ttl=config.result_ttl,
            clock=clock,
        )
        self.faults = FaultInjector(config.faults, seed=config.seed)
        self.fetcher = ImageFetcher(
            rewrite=self._fetch_target,
            allow_remote=config.allow_remote_fetch,
            timeout=config.fetch_timeout,
            max_bytes=config.max_fetch_bytes,
        )
        self.api = HitPawApi(self.state, self.fetcher, lambda: self.base_url, self._spawn)
        self.oss = OssApi(self.state, lambda: self.base_url)
        self.control = ControlEndpoint(self)
        self._fault_middleware = FaultMiddleware(self.faults, self.state)
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._internal_listener: asyncio.AbstractServer | None = None
        self._internal_port = 0
        self._relisten: asyncio.TimerHandle | None = None
        self._down_until: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections_accepted = 0

    def _build_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                ObserveMiddleware(self.state).handle,
                ControlGuard(self.control_token).handle,
                self._fault_middleware.handle,
            ],
            client_max_size=MAX_FETCH_BYTES + 1024,
        )
        self.api.add_routes(app.router)
        self.oss.add_routes(app.router)
        app.router.add_get("/samples", self._samples)
        app.router.add_get("/samples/", self._samples)
        app.router.add_get("/samples/{name}", self._sample)
        self.control.add_routes(app.router)
        return app

    # ----------------------------------------------------------------------------------------------
    # addresses

    @property
    def internal_url(self) -> str:
        """Where the emulator is reachable from itself (https when it serves TLS)."""
        scheme = "https" if self.config.ssl_context is not None else "http"
        return f"{scheme}://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The base of every URL the emulator hands out (``--public-url`` or the listening address)."""
        return (self.config.public_url or self.internal_url).rstrip("/")

    def _fetch_target(self, url: str) -> str:
        """Own URLs (under base_url or the listening address) go to the private listener."""
        for base in {self.base_url, self.internal_url}:
            if url == base or url.startswith(base + "/"):
                return f"http://{self.config.host}:{self._internal_port}" + url[len(base) :]
        return url

    # ----------------------------------------------------------------------------------------------
    # life cycle

    @property
    def listening(self) -> bool:
        """False while the emulator plays dead after ``down``."""
        return self._listener is not None

    async def start(self) -> None:
        """Listen; with port 0 the system picks one and :attr:`port` tells which."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.fetcher.open()
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
        await self.fetcher.close()
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
        self._down_until = self.state.now() + seconds
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

    def snapshot(self) -> dict[str, Any]:
        """Everything a test may want to assert on, as JSON-ready data."""
        self.state.sweep()
        return {
            "coins": self.state.coins,
            "jobs": self.state.job_snapshots(),
            "requests": dict(self.state.request_counts),
            "faults_served": dict(self.faults.served),
            "faults": self.faults.describe(),
            "streams": self._fault_middleware.streams.describe(),
            "connections": {"accepted": self.connections_accepted, "open": self.open_connections()},
            "listening": self.listening,
            "down_until": self._down_until,
            "uploads": len(self.state.objects),
            "config": self.state.settings() | {"base_url": self.base_url},
        }

    def set_faults(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        """Replace the fault rules (the random source restarts from the seed)."""
        self.faults.set_rules(rules, seed=seed)

    def set_key(self, key: str, state: str) -> None:
        """Register ``key`` as valid, expired or no_access, or remove it with "invalid"."""
        self.state.set_key(key, state)

    def configure(self, **settings: Any) -> None:
        """Change job_seconds, coins, result_ttl or force_error (new jobs end ERROR) while running."""
        self.state.configure(**settings)

    def expire_job(self, job_id: str) -> bool:
        """Make a job and its files disappear now, as if its TTL were over."""
        return self.state.expire_job(job_id)

    def fail_job(self, job_id: str) -> bool:
        """Make a job end in ERROR (when its time is up), whatever its image."""
        return self.state.fail_job(job_id)

    def finish_job(self, job_id: str) -> bool:
        """End a job's timer now (it completes once its processing is done)."""
        return self.state.finish_job(job_id)

    async def reset(self) -> None:
        """Back to start-up values: jobs, coins, keys, faults, counters, uploads; listening again."""
        await self._cancel_tasks()
        self.state.reset()
        self.faults.set_rules(self.config.faults, seed=self.config.seed)
        self.faults.reset_counters()
        self._fault_middleware.streams.reset()
        self.connections_accepted = 0
        if self._listener is None and self._runner is not None:
            await self.come_up()

    # ----------------------------------------------------------------------------------------------
    # the built-in sample images (not HitPaw's: the emulator's own, for tests and demos)

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
