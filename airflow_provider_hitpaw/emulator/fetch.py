"""How a job's image is fetched: like HitPaw's own download, but never beyond this machine by default.

Choices where HitPaw's documentation is silent:

* The image is fetched for real, only over http/https, with redirects followed (5 at most), a 10 s
  time-out and a 50 MB cap.
* By default only loopback hosts are fetched (the emulator runs on build machines that must not reach
  out); ``allow_remote_fetch`` lifts that.
* URLs under the emulator's own addresses are fetched from the emulator directly (the caller's
  ``rewrite`` maps them to its private listener), so a ``--public-url`` for another network still works
  for its samples and uploads.
* A URL that is well-formed but cannot be fetched only shows as a job ending in ``ERROR`` (that is what
  a client sees from the real service too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urljoin, urlsplit

import aiohttp

from airflow_provider_hitpaw.emulator.loopback import is_loopback_host

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_FETCH_BYTES: Final = 50 * 1024 * 1024
MAX_REDIRECTS: Final = 5
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class FetchError(Exception):
    """The job's image could not be fetched; the job ends in ERROR."""


class ImageFetcher:
    """An HTTP client for job images, with the emulator's fetch policy.

    ``rewrite`` maps a URL to the one actually requested (the emulator sends its own URLs to its
    private listener). :meth:`open` and :meth:`close` must be called on the event loop that fetches.
    """

    def __init__(
        self,
        *,
        rewrite: Callable[[str], str],
        allow_remote: bool = False,
        timeout: float = 10.0,
        max_bytes: int = MAX_FETCH_BYTES,
    ) -> None:
        self._rewrite = rewrite
        self._allow_remote = allow_remote
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the HTTP client."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout, connect=5),
            trust_env=False,  # never through a proxy from the environment
        )

    async def close(self) -> None:
        """Close the HTTP client and its connections; idempotent."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str) -> bytes:
        """The bytes at ``url``, or :class:`FetchError` saying why not."""
        assert self._session is not None
        target = self._rewrite(url)
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(target)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise FetchError(f"cannot fetch {parts.scheme or 'scheme-less'} URL")
            if not self._allow_remote and not is_loopback_host(parts.hostname):
                raise FetchError("fetching non-loopback hosts is disabled (allow_remote_fetch)")
            try:
                async with self._session.get(target, allow_redirects=False) as response:
                    if response.status in _REDIRECTS and "Location" in response.headers:
                        target = self._rewrite(urljoin(target, response.headers["Location"]))
                        continue
                    if not 200 <= response.status < 300:
                        raise FetchError(f"fetching the image answered HTTP {response.status}")
                    if (response.content_length or 0) > self._max_bytes:
                        raise FetchError("image larger than the size limit")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.content.iter_chunked(256 * 1024):
                        size += len(chunk)
                        if size > self._max_bytes:
                            raise FetchError("image larger than the size limit")
                        chunks.append(chunk)
                    return b"".join(chunks)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise FetchError(f"fetching the image failed: {type(exc).__name__}: {exc}") from exc
        raise FetchError("too many redirects")
