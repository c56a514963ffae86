"""``EmulatorServer``: the emulator on its own event loop in a background thread, for tests and scripts."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from airflow_provider_hitpaw.emulator.app import Emulator, EmulatorConfig
from airflow_provider_hitpaw.emulator.control import TOKEN_HEADER, check_control_token, new_control_token
from airflow_provider_hitpaw.emulator.faults import FaultRule, parse_fault_rules
from airflow_provider_hitpaw.emulator.state import DEFAULT_RESULT_TTL

if TYPE_CHECKING:
    import ssl

T = TypeVar("T")

#: A fault rule as :meth:`EmulatorServer.set_faults` takes it: an object, its JSON form or ``--fault`` text.
FaultLike = FaultRule | Mapping[str, Any] | str


def _to_rules(rules: Iterable[FaultLike]) -> list[FaultRule]:
    return parse_fault_rules([r.to_dict() if isinstance(r, FaultRule) else r for r in rules])


class EmulatorServer:
    """The emulator on its own event loop in a background thread, for tests and scripts.

    ``with EmulatorServer(job_seconds=0.2) as emu: requests.post(emu.base_url + "/api/...")``.
    The control helpers act on the loop directly rather than over HTTP, so they also work while the
    emulator is :meth:`down`; a test that calls ``/_emulator/*`` over HTTP sends :meth:`control_headers`.
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
        control_token: str | None = None,
    ) -> None:
        token = new_control_token() if control_token is None else check_control_token(control_token)
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
            control_token=token,
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
    def control_token(self) -> str:
        """What HTTP requests to ``/_emulator/*`` must send in ``X-Emulator-Token`` (known before start)."""
        assert self.config.control_token is not None
        return self.config.control_token

    def control_headers(self) -> dict[str, str]:
        """The headers an HTTP request to ``/_emulator/*`` needs: ``{"X-Emulator-Token": <token>}``."""
        return {TOKEN_HEADER: self.control_token}

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

    def finish_job(self, job_id: str) -> bool:
        """End a job's timer now (it completes once processed); False if there was no such job."""
        return self._call_sync(lambda e: e.finish_job(job_id))
