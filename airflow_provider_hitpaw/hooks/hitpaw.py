"""Hooks that speak HitPaw's API: :class:`HitPawHook` (requests) and :class:`HitPawAsyncHook` (aiohttp).

Both only move bytes: what to send and what an answer means comes from :mod:`airflow_provider_hitpaw._api`,
and how to retry from its :class:`~airflow_provider_hitpaw._api.RetryPolicy`. Each HTTP library is imported
only when a hook of its kind opens a client: the triggerer (which loads this module for the trigger) never
pays for requests, and a worker that never runs a trigger never loads aiohttp.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import parse_qsl, urlsplit

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_hitpaw import _api, _connection_form
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawConnectionError,
    HitPawError,
    HitPawInsufficientCoinsError,
    HitPawInvalidRequestError,
    HitPawJobFailedError,
    HitPawRateLimitError,
    HitPawSubmissionUnknownError,
    HitPawTimeoutError,
    HitPawTLSError,
)
from airflow_provider_hitpaw.validation import validate_job_id

if TYPE_CHECKING:
    import aiohttp
    import requests

    from airflow_provider_hitpaw._api import (
        ConnectionSettings,
        PresignedUpload,
        SegmentationJob,
        TaskStatus,
    )

T = TypeVar("T")
Parser = Callable[[int, bytes, str | None], T]

log = logging.getLogger(__name__)

#: Seconds to open a TCP/TLS connection, and to wait for an answer once the request is sent.
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 30.0

#: A job id HitPaw cannot know: asking for its status proves the key without spending coins.
_PROBE_JOB_ID = "airflow-connection-test-00000000"


def _pause(seconds: float) -> None:
    """The hooks' only way to wait, so that tests can record back-off delays instead of sleeping them."""
    time.sleep(seconds)


async def _pause_async(seconds: float) -> None:
    await asyncio.sleep(seconds)


def _scrub_bytes(body: bytes, secret: str) -> bytes:
    """Take the key out of an answer before it is parsed: error messages quote answers, and a proxy's error
    page may echo the request's headers."""
    return body.replace(secret.encode(), b"***") if secret else body


def _scrub_all(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = _scrub(text, secret)
    return text


def _scrub(text: str, secret: str) -> str:
    """Remove the key from foreign text (an exception message) before it can reach a log or a task."""
    return text.replace(secret, "***") if secret else text


class _HitPawHookBase(BaseHook):
    """What both hooks share: the connection type, its form, and the settings read from it."""

    conn_name_attr = "hitpaw_conn_id"
    default_conn_name = "hitpaw_default"
    conn_type = _connection_form.CONN_TYPE
    hook_name = _connection_form.HOOK_NAME

    def __init__(
        self,
        hitpaw_conn_id: str = default_conn_name,
        *,
        retry_policy: _api.RetryPolicy | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        super().__init__()
        self.hitpaw_conn_id = hitpaw_conn_id
        self.retry_policy = retry_policy or _api.RetryPolicy()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout

    @staticmethod
    def _settings_from(conn: Any, extra: dict[str, Any]) -> ConnectionSettings:
        return _api.ConnectionSettings.from_connection_fields(
            host=conn.host, port=conn.port, password=conn.password, extra=extra
        )

    def _log_retry(self, error: HitPawError, attempt: int, delay: float) -> None:
        self.log.warning(
            "HitPaw call failed (%s); attempt %d of %d, retrying in %.1f s",
            error,
            attempt,
            self.retry_policy.max_attempts,
            delay,
        )


def _mask(secret: str) -> None:
    """Register the key with Airflow's log masker, so that a log line that slips it shows ``***``."""
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)


async def _mask_async(secret: str) -> None:
    """:func:`_mask` for the event loop: Airflow 3's synchronous ``mask_secret`` sends a blocking message
    to the supervisor, which would stall (or deadlock) the triggerer's loop; its async twin does not."""
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:  # Airflow 2: masking is local, nothing is sent
        _mask(secret)
    else:
        await amask_secret(secret)


class HitPawHook(_HitPawHookBase):
    """Synchronous access to HitPaw, for operators and sensors running on a worker.

    One :class:`requests.Session` serves every call of the hook, so polls reuse a kept-alive connection
    instead of paying a TCP and TLS handshake each time.

    :param hitpaw_conn_id: the ``hitpaw`` connection: API key as password, optional base URL as host.
    :param retry_policy: how transient faults are retried; the default tries 5 times over about 15 s.
    :param pool_size: connections kept alive at most; raise it for :meth:`submit_segmentations` with a
        larger ``max_in_flight``.
    """

    def __init__(
        self, hitpaw_conn_id: str = _HitPawHookBase.default_conn_name, *, pool_size: int = 4, **kwargs: Any
    ) -> None:
        super().__init__(hitpaw_conn_id, **kwargs)
        self.pool_size = max(1, pool_size)

    # Airflow 2.11 reads the form from these two only when the hook class defines them itself.
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return _connection_form.ui_field_behaviour()

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        # Imported here: only the Airflow 2 webserver builds forms, and wtforms is not installed elsewhere.
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, StringField

        return {
            name: BooleanField(lazy_gettext(label))
            if kind == "boolean"
            else StringField(lazy_gettext(label), widget=BS3TextFieldWidget())
            for name, (label, kind) in _connection_form.EXTRA_FIELDS.items()
        }

    @cached_property
    def settings(self) -> ConnectionSettings:
        conn = self.get_connection(self.hitpaw_conn_id)
        settings = self._settings_from(conn, _without_form_prefix(conn.extra_dejson))
        _mask(settings.api_key)
        _check_ca_bundle(settings.verify)
        return settings

    @cached_property
    def session(self) -> requests.Session:
        import requests
        from requests.adapters import HTTPAdapter

        session = requests.Session()
        # Retries are ours (the policy knows HitPaw's codes); urllib3's own would double them.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.headers.update(_api.request_headers(self.settings.api_key))
        session.verify = self.settings.verify
        return session

    def close(self) -> None:
        if "session" in self.__dict__:
            self.session.close()
            del self.__dict__["session"]
        if "_storage_session" in self.__dict__:
            self._storage_session.close()
            del self.__dict__["_storage_session"]

    def __enter__(self) -> HitPawHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get_conn(self) -> requests.Session:
        return self.session

    def submit_segmentation(self, file_url: str) -> SegmentationJob:
        """Start a job for the image at ``file_url``; HitPaw charges for it.

        Not idempotent: a submission whose answer was lost is sent again once at most (see
        :class:`~airflow_provider_hitpaw.exceptions.HitPawSubmissionUnknownError`).
        """
        return self._call(_api.submit_request(file_url), _api.parse_submission, idempotent=False)

    def get_task_status(self, job_id: str) -> TaskStatus:
        return self._call(_api.task_status_request(validate_job_id(job_id)), _api.parse_task_status)

    def wait_for_completion(
        self, job_id: str, poll_interval: float = 3.0, timeout: float = 3600.0
    ) -> TaskStatus:
        """Poll until the job is ``COMPLETED`` and return its status, holding this process meanwhile.

        Transient faults that outlast a call's own retries do not end the wait: until HitPaw says
        ``ERROR``, the job has not failed, and the next poll may well get through.
        """
        deadline = time.monotonic() + timeout
        last_status: str | None = None
        while True:
            try:
                status = self.get_task_status(job_id)
            except HitPawError as err:
                if not err.retryable:
                    raise
                self.log.warning("Polling job %s failed (%s); polling on", job_id, err)
            else:
                if status.status != last_status:
                    self.log.info("HitPaw job %s is %s", job_id, status.status)
                    last_status = status.status
                if status.is_completed:
                    return status
                if status.is_failed:
                    raise HitPawJobFailedError(f"HitPaw job {job_id} ended with status ERROR")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HitPawTimeoutError(
                    f"HitPaw job {job_id} was still {last_status or 'unknown'} after {timeout:g} s"
                )
            _pause(min(poll_interval, remaining))

    def test_connection(self) -> tuple[bool, str]:
        """Prove the key without spending coins: HitPaw answers a status query for an unknown job
        with an authentication error under a bad key and with a request error under a good one."""
        try:
            return self._probe_key()
        finally:
            self.close()  # the form's hook lives on in the webserver: its connections must not

    def _probe_key(self) -> tuple[bool, str]:
        try:
            self.get_task_status(_PROBE_JOB_ID)
        except HitPawAuthenticationError as err:
            return False, f"HitPaw refused the API key: {err}"
        except (HitPawInvalidRequestError, HitPawInsufficientCoinsError):
            # Both are answers HitPaw gives only after it accepted the key.
            return True, "HitPaw accepted the API key."
        except HitPawError as err:
            if err.retryable:
                return False, f"HitPaw could not be reached: {err}"
            return False, str(err)
        except Exception as err:
            return False, _scrub(f"{type(err).__name__}: {err}", self._api_key_or_empty())
        return True, "HitPaw accepted the API key."

    def _api_key_or_empty(self) -> str:
        return self.settings.api_key if "settings" in self.__dict__ else ""

    def submit_segmentations(
        self,
        file_urls: Sequence[str],
        *,
        max_in_flight: int = 8,
        on_result: Callable[[int, SegmentationJob | HitPawError], None] | None = None,
    ) -> list[SegmentationJob | HitPawError]:
        """Submit many images, ``max_in_flight`` at a time; one result (a job, or its error) per URL.

        When HitPaw answers 429, every submission of the batch waits out one shared back-off, instead of
        each retrying on its own clock and keeping the limit hit; a rate-limited image is tried again,
        not dropped. ``on_result`` is called in the caller's thread as each image is done, so that the
        caller can record jobs (and what they cost) as they are created.
        """
        requests_ = [_api.submit_request(url) for url in file_urls]
        return self._call_many(requests_, _api.parse_submission, max_in_flight, on_result, idempotent=False)

    def get_task_statuses(
        self, job_ids: Sequence[str], *, max_in_flight: int = 8
    ) -> list[TaskStatus | HitPawError]:
        """The status of many jobs, ``max_in_flight`` polls at a time; an error stands for a job's status
        where its poll failed."""
        requests_ = [_api.task_status_request(validate_job_id(job_id)) for job_id in job_ids]
        return self._call_many(requests_, _api.parse_task_status, max_in_flight, None, idempotent=True)

    def _call_many(
        self,
        requests_: list[_api.ApiRequest],
        parse: Parser[T],
        max_in_flight: int,
        on_result: Callable[[int, T | HitPawError], None] | None,
        *,
        idempotent: bool,
    ) -> list[T | HitPawError]:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        results: list[T | HitPawError | None] = [None] * len(requests_)
        gate = _RateLimitGate(self.retry_policy)
        _ = self.session  # opened once, here, not raced for by the threads

        def one(request: _api.ApiRequest) -> T | HitPawError:
            try:
                return self._call(request, parse, gate, idempotent=idempotent)
            except HitPawError as err:
                return err

        pool = ThreadPoolExecutor(max_workers=max(1, max_in_flight), thread_name_prefix="hitpaw")
        try:
            futures = {pool.submit(one, request): index for index, request in enumerate(requests_)}
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                if on_result is not None:
                    on_result(index, results[index])  # type: ignore[arg-type]
        except BaseException:
            # A task time-out, a SIGTERM or a failing callback: requests not yet sent must not go out
            # (each submission is paid for) with nobody left to record their jobs.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return results  # type: ignore[return-value]

    def _call(
        self,
        request: _api.ApiRequest,
        parse: Parser[T],
        gate: _RateLimitGate | None = None,
        *,
        idempotent: bool = True,
    ) -> T:
        import requests

        url = request.url(self.settings.base_url)
        attempt = 0
        rate_limited = 0
        resent = 0
        while True:
            if gate is not None:
                gate.wait()
            attempt += 1
            try:
                response = self.session.post(
                    url,
                    json=request.body,
                    timeout=(self.connect_timeout, self.read_timeout),
                    # Per request: requests lets REQUESTS_CA_BUNDLE override a session's own setting.
                    verify=self.settings.verify,
                    # A redirect would carry the Apikey header to wherever it points.
                    allow_redirects=False,
                )
                result = parse(
                    response.status_code,
                    _scrub_bytes(response.content, self.settings.api_key),
                    response.headers.get("Retry-After"),
                )
            except requests.RequestException as err:
                error: HitPawError = requests_failure(
                    err, _scrub(f"{type(err).__name__}: {err}", self.settings.api_key)
                )
            except HitPawError as err:
                error = err
            else:
                if gate is not None:
                    gate.passed()
                return result
            if not idempotent and error.retryable and _api.submission_may_have_landed(error):
                resent += 1
                if resent > self.retry_policy.ambiguous_resubmits:
                    raise _unknown_submission(error) from error
                self.log.warning(
                    "The answer to a submission was lost (%s); HitPaw may have accepted it. Sending it once "
                    "more: at worst this image is charged twice",
                    error,
                )
            if gate is not None and isinstance(error, HitPawRateLimitError):
                # The whole batch backs off together; the request stays queued, and counts against a
                # budget of its own rather than the attempts meant for faults.
                rate_limited += 1
                if rate_limited > _RATE_LIMIT_BUDGET:
                    raise error
                attempt -= 1
                gate.hold(error)
                continue
            if not self.retry_policy.should_retry(error, attempt):
                raise error
            delay = self.retry_policy.delay(error, attempt)
            self._log_retry(error, attempt, delay)
            _pause(delay)

    # --- uploads: the OSS pre-signed PUT -----------------------------------------------------------

    def presign_upload(
        self, filename: str, content_type: str, expire_seconds: int | None = None
    ) -> PresignedUpload:
        """A pre-signed PUT URL for one file (free: no coins), valid ``expire_seconds`` (60 to 7200)."""
        return self._call(_api.presign_request(filename, content_type, expire_seconds), _api.parse_presign)

    def presign_uploads(
        self, files: Sequence[tuple[str, str]], expire_seconds: int | None = None
    ) -> list[PresignedUpload | HitPawError]:
        """Pre-signed PUT URLs for many ``(filename, content_type)`` pairs, 20 per call, in order.

        A file the service refused is an error in its place; a call that fails as a whole (a bad key,
        an outage outlasting the retries) raises.
        """
        files = list(files)
        for filename, content_type in files:  # every file checked before the first call
            _api.presign_request(filename, content_type, expire_seconds)
        results: list[PresignedUpload | HitPawError] = []
        for start in range(0, len(files), _api.PRESIGN_BATCH_MAX):
            chunk = files[start : start + _api.PRESIGN_BATCH_MAX]
            parse = functools.partial(_api.parse_presign_batch, expected=len(chunk))
            results.extend(self._call(_api.presign_batch_request(chunk, expire_seconds), parse))
        return results

    @cached_property
    def _storage_session(self) -> requests.Session:
        import requests
        from requests.adapters import HTTPAdapter

        """The session for the storage host: it never carries the API key, only the signed URL does."""
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.pool_size, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def upload(self, presigned: PresignedUpload, data: bytes | BinaryIO) -> None:
        """PUT ``data`` to ``presigned.upload_url`` as ``presigned.content_type``; retried like API calls.

        A stream is sent as it is read (a 50 MB file is not loaded into memory); it is retried only when
        it can be rewound to where it started. A refusal by the storage (HTTP 4xx) is final: 403 means a
        signature that does not match (wrong Content-Type) or has expired.
        """
        import requests

        headers = {"Content-Type": presigned.content_type, _api.API_KEY_HEADER: None}
        start = _stream_position(data)
        query = urlsplit(presigned.upload_url).query
        # Each signed value on its own too: a storage's error page quotes the signature, not the query.
        secrets = [query, *(value for _, value in parse_qsl(query) if len(value) >= 8)]
        target = _api.url_without_query(presigned.upload_url)
        attempt = 0
        while True:
            attempt += 1
            if start is not None:
                data.seek(start)  # type: ignore[union-attr]
            try:
                response = self._storage_session.put(
                    presigned.upload_url,
                    data=data,
                    headers=headers,
                    timeout=(self.connect_timeout, self.read_timeout),
                    verify=self.settings.verify,
                )
                with response:
                    if 200 <= response.status_code < 300:
                        self.log.info("Uploaded %s (%s)", presigned.object_key, presigned.content_type)
                        return
                    error = _api.error_for_code(
                        None,
                        response.status_code,
                        f"the storage refused the upload to {target}: "
                        f"{_scrub_all(_api.quote_body(response.content), secrets)}",
                        retry_after=_api.parse_retry_after(response.headers.get("Retry-After")),
                    )
            except requests.RequestException as err:
                error = requests_failure(
                    err, _scrub_all(f"uploading to {target}: {type(err).__name__}: {err}", secrets)
                )
            rewindable = isinstance(data, bytes | bytearray) or start is not None
            if not rewindable or not self.retry_policy.should_retry(error, attempt):
                raise error
            delay = self.retry_policy.delay(error, attempt)
            self._log_retry(error, attempt, delay)
            _pause(delay)


def _stream_position(data: bytes | BinaryIO) -> int | None:
    """Where a rewindable stream starts, or None (bytes, or a stream that cannot seek)."""
    if isinstance(data, bytes | bytearray):
        return None
    try:
        return data.tell() if data.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


#: How often one request of a batch may be turned away with 429 before it is reported as failed.
_RATE_LIMIT_BUDGET = 30


class _RateLimitGate:
    """One back-off shared by the threads of a batch: a 429 to any of them pauses them all.

    Consecutive 429s lengthen the pause as the retry policy says; an answer that gets through resets it.
    """

    def __init__(self, policy: _api.RetryPolicy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self._strikes = 0
        self.holds = 0

    def wait(self) -> None:
        while True:
            with self._lock:
                delay = self._resume_at - time.monotonic()
            if delay <= 0:
                return
            _pause(delay)

    def hold(self, error: HitPawError) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._resume_at:
                return  # another thread already paused the batch for this burst
            self._strikes += 1
            self.holds += 1
            delay = self._policy.delay(error, self._strikes)
            self._resume_at = now + delay
        log.warning("HitPaw is rate limiting (%s); the whole batch pauses %.1f s", error, delay)

    def passed(self) -> None:
        with self._lock:
            self._strikes = 0


class HitPawAsyncHook(_HitPawHookBase):
    """Asynchronous access to HitPaw, for triggers: the same calls as :class:`HitPawHook`, as coroutines.

    The connection is read with ``get_async_connection`` and the client is opened on first use, on the
    running loop, so nothing blocks the triggerer's event loop. Use the hook as ``async with`` so that it
    lets go of its client on every path.

    :param share_client: use the one client that every hook of this process shares for the same base URL
        on the same event loop (a triggerer runs thousands of triggers: one connection pool for all of
        them, instead of a pool and its TLS handshakes per trigger). The last hook to let go closes it.
    """

    def __init__(
        self,
        hitpaw_conn_id: str = _HitPawHookBase.default_conn_name,
        *,
        share_client: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(hitpaw_conn_id, **kwargs)
        self.share_client = share_client
        self._settings: ConnectionSettings | None = None
        self._client: aiohttp.ClientSession | None = None
        self._shared_key: tuple[Any, ...] | None = None
        self._client_lock: asyncio.Lock | None = None

    async def get_settings(self) -> ConnectionSettings:
        if self._settings is None:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )

            conn = await get_async_connection(self.hitpaw_conn_id)
            extra = await get_async_extra_dejson(conn)
            settings = self._settings_from(conn, _without_form_prefix(extra))
            await _mask_async(settings.api_key)
            self._settings = settings
        return self._settings

    async def prepare(self) -> None:
        """Read the connection and load aiohttp off the event loop, before the first request.

        The first import of aiohttp takes tens of milliseconds: in a triggerer's loop that would stall
        every other trigger, so it happens in a thread.
        """
        await self.get_settings()
        if "aiohttp" not in sys.modules:
            await asyncio.to_thread(importlib.import_module, "aiohttp")

    async def _get_client(self) -> aiohttp.ClientSession:
        if self._client is not None and not self._client.closed:
            return self._client
        # Concurrent first calls (a batch trigger polls many jobs at once) must open one client, not one
        # each: a second would never be closed.
        if self._client_lock is None:
            self._client_lock = asyncio.Lock()
        async with self._client_lock:
            if self._client is not None and not self._client.closed:
                return self._client
            await self.prepare()
            settings = await self.get_settings()
            ssl_context = await asyncio.to_thread(_ssl_context, settings.verify)
            if self.share_client:
                self._shared_key = (settings.base_url, settings.verify)
                self._client = _SHARED_CLIENTS.acquire(self._shared_key, ssl_context)
            else:
                self._client = _new_client(ssl_context)
            return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self._shared_key is not None:
            key, self._shared_key = self._shared_key, None
            await _SHARED_CLIENTS.release(key, client)
        else:
            await client.close()

    async def __aenter__(self) -> HitPawAsyncHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def submit_segmentation(self, file_url: str) -> SegmentationJob:
        return await self._call(_api.submit_request(file_url), _api.parse_submission, idempotent=False)

    async def get_task_status(self, job_id: str) -> TaskStatus:
        return await self._call(_api.task_status_request(validate_job_id(job_id)), _api.parse_task_status)

    async def _call(self, request: _api.ApiRequest, parse: Parser[T], *, idempotent: bool = True) -> T:
        client = await self._get_client()
        import aiohttp  # loaded by _get_client, off the loop

        settings = await self.get_settings()
        url = request.url(settings.base_url)
        headers = _api.request_headers(settings.api_key)
        timeout = aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.read_timeout)
        attempt = 0
        resent = 0
        while True:
            attempt += 1
            try:
                async with client.post(
                    url, json=request.body, headers=headers, timeout=timeout, allow_redirects=False
                ) as response:
                    body = await response.read()
                result = parse(
                    response.status, _scrub_bytes(body, settings.api_key), response.headers.get("Retry-After")
                )
            except (TimeoutError, aiohttp.ClientError) as err:
                error: HitPawError = _aiohttp_failure(err, settings.api_key)
            except HitPawError as err:
                error = err
            else:
                return result
            if not idempotent and error.retryable and _api.submission_may_have_landed(error):
                resent += 1
                if resent > self.retry_policy.ambiguous_resubmits:
                    raise _unknown_submission(error) from error
            if not self.retry_policy.should_retry(error, attempt):
                raise error
            delay = self.retry_policy.delay(error, attempt)
            self._log_retry(error, attempt, delay)
            await _pause_async(delay)


#: Connections one client keeps open to one base URL, at most: enough for a triggerer's polls (each takes
#: about a millisecond), few enough to stay a polite client.
CLIENT_CONNECTION_LIMIT = 32


def _new_client(ssl_context: Any) -> aiohttp.ClientSession:
    """A client carrying no secret: the key is sent per request, so that clients can be shared."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CLIENT_CONNECTION_LIMIT, ssl=ssl_context),
        # Per-request timeouts come from each hook; this only bounds a request that forgot one.
        timeout=aiohttp.ClientTimeout(total=300),
    )


class _SharedClients:
    """The clients that hooks of this process share: one per (event loop, base URL, TLS setting).

    Created lazily on the running loop, counted by users, closed when the last user lets go. Entries of
    an event loop that has gone (tests run many) are never handed out again.
    """

    def __init__(self) -> None:
        self._entries: dict[
            tuple[Any, ...], tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession, int]
        ] = {}

    def acquire(self, key: tuple[Any, ...], ssl_context: Any) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        full_key = (id(loop), *key)
        entry = self._entries.get(full_key)
        if entry is None or entry[0] is not loop or entry[1].closed:
            entry = (loop, _new_client(ssl_context), 0)
        self._entries[full_key] = (entry[0], entry[1], entry[2] + 1)
        return entry[1]

    async def release(self, key: tuple[Any, ...], client: aiohttp.ClientSession) -> None:
        full_key = (id(asyncio.get_running_loop()), *key)
        entry = self._entries.get(full_key)
        if entry is None or entry[1] is not client:
            await client.close()
            return
        users = entry[2] - 1
        if users > 0:
            self._entries[full_key] = (entry[0], entry[1], users)
            return
        del self._entries[full_key]
        await client.close()

    def users(self, key: tuple[Any, ...]) -> int:
        """How many hooks on the running loop hold the client of ``key`` (for tests and benchmarks)."""
        entry = self._entries.get((id(asyncio.get_running_loop()), *key))
        return entry[2] if entry else 0


_SHARED_CLIENTS = _SharedClients()


def requests_failure(err: Exception, text: str) -> HitPawConnectionError:
    """The error family of a requests failure, told as ``text`` (which the caller has scrubbed); whether
    the request had left decides on resubmitting. Every requests call of the package maps through here."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if isinstance(err, requests.exceptions.SSLError):
        return HitPawTLSError(text, request_sent=False)
    reason = getattr(err.args[0], "reason", None) if err.args else None
    never_sent = isinstance(err, requests.exceptions.ConnectTimeout) or isinstance(
        reason, NewConnectionError | ConnectTimeoutError
    )
    return HitPawConnectionError(text, request_sent=not never_sent)


def _aiohttp_failure(err: Exception, api_key: str) -> HitPawConnectionError:
    import aiohttp

    text = _scrub(f"{type(err).__name__}: {err}", api_key)
    if isinstance(err, aiohttp.ClientSSLError):
        return HitPawTLSError(text, request_sent=False)
    never_sent = isinstance(err, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return HitPawConnectionError(text, request_sent=not never_sent)


def _unknown_submission(error: HitPawError) -> HitPawSubmissionUnknownError:
    return HitPawSubmissionUnknownError(
        f"the answer to a submission was lost twice ({error}); HitPaw may have accepted the image and "
        "charged for it. Check the account's jobs before running this task again",
        http_status=error.http_status,
    )


def _without_form_prefix(extra: dict[str, Any]) -> dict[str, Any]:
    """Airflow 2.11's form may store extra fields as ``extra__hitpaw__<name>``: read both spellings."""
    prefix = f"extra__{_connection_form.CONN_TYPE}__"
    return {**{k.removeprefix(prefix): v for k, v in extra.items() if k.startswith(prefix)}, **extra}


def _check_ca_bundle(verify: bool | str) -> None:
    if isinstance(verify, str) and not os.path.isfile(verify):
        raise HitPawConfigurationError("extra.ca_bundle", f"no CA bundle file at {verify!r}")


def _ssl_context(verify: bool | str) -> Any:
    """aiohttp's ``ssl`` argument for requests' ``verify`` (True, False, or a CA bundle path).

    A context for a CA bundle is built once per bundle file (and rebuilt when the file changes): loading
    a bundle costs milliseconds, and a triggerer starts thousands of hooks.
    """
    if verify is True:
        return True
    if verify is False:
        return False
    _check_ca_bundle(verify)
    return _context_for_bundle(verify, os.stat(verify).st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _context_for_bundle(path: str, mtime_ns: int) -> Any:
    import ssl

    return ssl.create_default_context(cafile=path)
