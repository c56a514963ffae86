"""The HTTP client patterns the trigger benchmarks compare, each as a way to build a trigger's hook.

- ``shared``: the provider as shipped: every trigger of the process polls through one aiohttp client.
- ``per-trigger``: one aiohttp client per trigger (the provider before it shared).
- ``httpx``: one ``httpx.AsyncClient`` per trigger (the alternative already installed with Airflow).
- ``session-per-poll``: a new aiohttp session for every poll, the pattern of Airflow's dbt Cloud and HTTP
  triggers (``async with aiohttp.ClientSession() as session`` inside each call).
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import HitPawConnectionError, HitPawError
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook

VARIANTS = ("shared", "per-trigger", "httpx", "session-per-poll")


class _RetryingHook(HitPawAsyncHook):
    """The shipped retry loop around a benchmark's own single attempt."""

    async def _attempt(self, url: str, request: _api.ApiRequest, parse: Any) -> Any:
        raise NotImplementedError

    async def _call(self, request: _api.ApiRequest, parse: Any) -> Any:
        url = request.url((await self.get_settings()).base_url)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(url, request, parse)
            except HitPawError as err:
                error = err
            except Exception as err:
                error = HitPawConnectionError(str(err))
            if not self.retry_policy.should_retry(error, attempt):
                raise error
            await asyncio.sleep(self.retry_policy.delay(error, attempt))


class HttpxHook(_RetryingHook):
    async def _attempt(self, url: str, request: _api.ApiRequest, parse: Any) -> Any:
        import httpx

        if self._client is None:
            settings = await self.get_settings()
            self._client = httpx.AsyncClient(  # type: ignore[assignment]
                verify=settings.verify,
                timeout=httpx.Timeout(self.read_timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=32),
            )
        settings = await self.get_settings()
        response = await self._client.post(  # type: ignore[union-attr]
            url, json=request.body, headers=_api.request_headers(settings.api_key)
        )
        return parse(response.status_code, response.content, response.headers.get("Retry-After"))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()  # type: ignore[attr-defined]
            self._client = None


class SessionPerPollHook(_RetryingHook):
    _ssl: Any = None

    async def _attempt(self, url: str, request: _api.ApiRequest, parse: Any) -> Any:
        import aiohttp

        from airflow_provider_hitpaw.hooks.hitpaw import _ssl_context

        settings = await self.get_settings()
        if self._ssl is None:  # built once: the baseline pays handshakes, not CA loading
            self._ssl = await asyncio.to_thread(_ssl_context, settings.verify)
        async with (
            aiohttp.ClientSession(
                headers=_api.request_headers(settings.api_key), connector=aiohttp.TCPConnector(ssl=self._ssl)
            ) as session,
            session.post(url, json=request.body) as response,
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
