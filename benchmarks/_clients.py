"""The HTTP client patterns the trigger benchmarks compare, each as a way to build a trigger's hook.

- ``shared``: the provider as shipped: every trigger of the process polls through one aiohttp client.
- ``per-trigger``: one aiohttp client per trigger (the provider before it shared).
- ``httpx``: one ``httpx.AsyncClient`` per trigger (the alternative already installed with Airflow).
- ``session-per-poll``: a new aiohttp session for every poll, the pattern of Airflow's dbt Cloud and HTTP
  triggers (``async with aiohttp.ClientSession() as session`` inside each call).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import HitPawConnectionError, HitPawError
from airflow_provider_hitpaw.hooks import _transport
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook

if TYPE_CHECKING:
    from airflow_provider_hitpaw.hooks._transport import Attempts

VARIANTS = ("shared", "per-trigger", "httpx", "session-per-poll")


class _RetryingHook(HitPawAsyncHook):
    """The shipped attempt loop (``_transport.retry_async``: retries, back-off, the poll's deadline) around
    a benchmark's own single attempt, so that only the HTTP client differs from the provider's."""

    async def _attempt(self, url: str, request: _api.ApiRequest, parse: Any, attempts: Attempts) -> Any:
        raise NotImplementedError

    async def _call(self, request: _api.ApiRequest, parse: Any, attempts: Attempts) -> Any:
        settings = await self.get_settings()
        url = request.url(settings.base_url)
        attempts.secrets = (*attempts.secrets, settings.api_key)

        async def attempt() -> Any:
            try:
                # Bounded as the shipped exchange is: its time-outs added up, never past the deadline.
                async with asyncio.timeout(self._exchange_seconds(attempts)):
                    return await self._attempt(url, request, parse, attempts)
            except HitPawError:
                raise
            except Exception as err:
                raise HitPawConnectionError(f"{type(err).__name__}: {err}") from None

        return await _transport.retry_async(attempt, attempts)

    def _exchange_seconds(self, attempts: Attempts) -> float:
        left = attempts.time_left()
        whole = self.connect_timeout + self.read_timeout
        return whole if left is None else min(max(left, 0.001), whole)


class HttpxHook(_RetryingHook):
    async def _attempt(self, url: str, request: _api.ApiRequest, parse: Any, attempts: Attempts) -> Any:
        import httpx

        settings = await self.get_settings()
        if self._client is None:
            self._client = httpx.AsyncClient(  # type: ignore[assignment]
                verify=settings.verify, limits=httpx.Limits(max_connections=32)
            )
        connect, read = attempts.timeouts(self.connect_timeout, self.read_timeout)
        response = await self._client.post(  # type: ignore[union-attr]
            url,
            json=request.body,
            headers=_api.request_headers(settings.api_key),
            timeout=httpx.Timeout(read, connect=connect),
        )
        return parse(response.status_code, response.content, response.headers.get("Retry-After"))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()  # type: ignore[attr-defined]
            self._client = None


class SessionPerPollHook(_RetryingHook):
    _ssl: Any = None

    async def _attempt(self, url: str, request: _api.ApiRequest, parse: Any, attempts: Attempts) -> Any:
        import aiohttp

        settings = await self.get_settings()
        if self._ssl is None:  # built once: the baseline pays handshakes, not CA loading
            self._ssl = await asyncio.to_thread(_transport.ssl_context, settings.verify)
        connect, read = attempts.timeouts(self.connect_timeout, self.read_timeout)
        async with (
            aiohttp.ClientSession(
                headers=_api.request_headers(settings.api_key), connector=aiohttp.TCPConnector(ssl=self._ssl)
            ) as session,
            session.post(
                url, json=request.body, timeout=aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)
            ) as response,
        ):
            body = await response.read()
            return parse(response.status, body, response.headers.get("Retry-After"))

    async def close(self) -> None:
        return None


def make_hook(variant: str, conn_id: str) -> HitPawAsyncHook:
    if variant == "shared":
        return HitPawAsyncHook(conn_id, share_client=True)
    if variant == "per-trigger":
        return HitPawAsyncHook(conn_id, share_client=False)
    if variant == "httpx":
        return HttpxHook(conn_id)
    if variant == "session-per-poll":
        return SessionPerPollHook(conn_id)
    raise ValueError(variant)
