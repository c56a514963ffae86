"""Hooks that speak HitPaw's API: :class:`HitPawHook` (requests) and :class:`HitPawAsyncHook` (aiohttp).

Both only say what to send: the bytes come from :mod:`airflow_provider_hitpaw._api`, every request goes
through the one attempt loop of :mod:`~airflow_provider_hitpaw.hooks._transport` (retries, deadlines, size
caps, failure mapping), and a wait follows the one rule of :mod:`airflow_provider_hitpaw._wait`. Each HTTP
library is imported only when a hook of its kind opens a client: the triggerer (which loads this module
for the trigger) never pays for requests, and a worker that never runs a trigger never loads aiohttp.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar
from urllib.parse import parse_qsl, urlsplit

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_hitpaw import _api, _connection_form
from airflow_provider_hitpaw._addresses import AddressPolicy
from airflow_provider_hitpaw._settings import ConnectionSettings
from airflow_provider_hitpaw._wait import JobWatch
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawError,
    HitPawInsufficientCoinsError,
    HitPawInvalidRequestError,
)
from airflow_provider_hitpaw.hooks import _batch, _transport
from airflow_provider_hitpaw.hooks._transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    Attempts,
)
from airflow_provider_hitpaw.validation import validate_job_id

if TYPE_CHECKING:
    import aiohttp
    import requests

    from airflow_provider_hitpaw._api import PresignedUpload, SegmentationJob, TaskStatus
    from airflow_provider_hitpaw._budget import CoinBudget

T = TypeVar("T")
Parser = Callable[[int, bytes, str | None], T]

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "HitPawAsyncHook",
    "HitPawHook",
]

#: A job id HitPaw cannot know: asking for its status proves the key without spending coins.
_PROBE_JOB_ID = "airflow-connection-test-00000000"


class _HitPawHookBase(BaseHook):
    """What both hooks share: the connection type, its form, and the settings read from it."""

    conn_name_attr = "hitpaw_conn_id"
    default_conn_name = _connection_form.DEFAULT_CONN_ID
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
        #: Submissions this hook sent that created, or may yet create, a job (one that HitPaw refused
        #: does not count): while there are none, a refused key has cost nothing.
        self._open_submissions = 0
        self._submissions_lock = threading.Lock()

    def _sending(self, request: _api.ApiRequest) -> None:
        """Count a submission before it leaves: one in flight in another thread may yet be charged."""
        if request.path == _api.SUBMIT_PATH:
            with self._submissions_lock:
                self._open_submissions += 1

    def _key_refused(
        self, err: HitPawAuthenticationError, request: _api.ApiRequest
    ) -> HitPawAuthenticationError:
        """The one place a refused key is explained: which connection it came from, and whether no coin
        was spent (only when this hook had no job created and the call was not about an existing job)."""
        with self._submissions_lock:
            if request.path == _api.SUBMIT_PATH:
                self._open_submissions -= 1  # refused: this one created nothing
            nothing_spent = self._open_submissions == 0 and "job_id" not in request.body
        return err.refused_key_of(self.hitpaw_conn_id, nothing_spent=nothing_spent)

    @staticmethod
    def _settings_from(conn: Any, extra: dict[str, Any]) -> ConnectionSettings:
        return ConnectionSettings.from_connection_fields(
            host=conn.host, port=conn.port, password=conn.password, extra=extra
        )

    def _attempts(self, what: str, *, idempotent: bool = True, deadline: float | None = None) -> Attempts:
        return Attempts(
            self.retry_policy, deadline=deadline, idempotent=idempotent, what=what, logger=self.log
        )


def _mask(secret: str) -> None:
    """Register the key with Airflow's log masker, so that a log line that slips it shows ``***``."""
    from airflow.providers.common.compat.sdk import mask_secret

    mask_secret(secret)


async def _mask_async(secret: str) -> None:
    """:func:`_mask` for the event loop, on every line.

    Airflow 3's synchronous ``mask_secret`` sends a blocking message to the supervisor: in the triggerer's
    loop it raises on 3.0 (``AsyncToSync`` in an event loop) and leaves the trigger's log unmasked on 3.1.
    3.3 has ``amask_secret``; 3.0 to 3.2 get the same message sent with the triggerer's own async ``asend``
    (never from a thread: that corrupts the triggerer's channel), and the key added to this process's
    masker. Where no async channel exists (Airflow 2, ``dags test``), masking is local and synchronous.
    """
    try:
        from airflow.sdk.log import amask_secret
    except ImportError:
        pass
    else:
        await amask_secret(secret)
        return
    comms = _supervisor_comms()
    if comms is None or not hasattr(comms, "asend"):
        _mask(secret)
        return
    from airflow.sdk.execution_time.comms import MaskSecret

    _mask_locally(secret)
    await comms.asend(MaskSecret(value=secret, name=None))


def _supervisor_comms() -> Any:
    try:
        from airflow.sdk.execution_time import task_runner
    except ImportError:  # Airflow 2
        return None
    return getattr(task_runner, "SUPERVISOR_COMMS", None)


def _mask_locally(secret: str) -> None:
    """Add the key to this process's own masker (3.1+ keeps it in ``_shared``, 3.0 in ``execution_time``)."""
    try:
        from airflow.sdk._shared.secrets_masker import _secrets_masker as masker
    except ImportError:
        from airflow.sdk.execution_time.secrets_masker import (  # type: ignore[no-redef]
            _secrets_masker as masker,
        )
    masker().add_mask(secret, None)


def _deadline_in(seconds: float | None) -> float | None:
    return None if seconds is None else time.monotonic() + seconds


class HitPawHook(_HitPawHookBase):
    """Synchronous access to HitPaw, for operators and sensors running on a worker.

    One :class:`requests.Session` serves every API call of the hook, so polls reuse a kept-alive
    connection instead of paying a TCP and TLS handshake each time. Result downloads and uploads go
    through a second session that never carries the key, and that connects only to addresses the
    base URL vouches for (see :mod:`airflow_provider_hitpaw._addresses`).

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
        return _connection_form.form_widgets()

    @cached_property
    def settings(self) -> ConnectionSettings:
        conn = self.get_connection(self.hitpaw_conn_id)
        settings = self._settings_from(conn, _without_form_prefix(conn.extra_dejson))
        _mask(settings.api_key)
        _transport.check_ca_bundle(settings.verify)
        return settings

    @cached_property
    def session(self) -> requests.Session:
        session = _transport.requests_session(self.pool_size)
        session.headers.update(_api.request_headers(self.settings.api_key))
        session.verify = self.settings.verify
        return session

    @cached_property
    def _storage_session(self) -> requests.Session:
        """The session for hosts that HitPaw's answers name: it never carries the key (those URLs are
        public or signed), and reaches only addresses of the kinds the base URL has."""
        addresses = _transport.resolve_addresses(self.settings.base_host)
        return _transport.requests_session(self.pool_size, AddressPolicy.beside(addresses))

    def close(self) -> None:
        for name in ("session", "_storage_session"):
            if name in self.__dict__:
                self.__dict__.pop(name).close()

    def __enter__(self) -> HitPawHook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def get_conn(self) -> requests.Session:
        return self.session

    # --- the API -------------------------------------------------------------------------------------

    def submit_segmentation(self, file_url: str) -> SegmentationJob:
        """Start a job for the image at ``file_url``; HitPaw charges for it.

        Not idempotent: a submission whose answer was lost is sent again once at most (see
        :class:`~airflow_provider_hitpaw.exceptions.HitPawSubmissionUnknownError`).
        """
        attempts = self._attempts("Submitting an image to HitPaw", idempotent=False)
        job = self._call(_api.submit_request(file_url), _api.parse_submission, attempts)
        return dataclasses.replace(job, resent=attempts.resent) if attempts.resent else job

    def get_task_status(self, job_id: str, *, timeout: float | None = None) -> TaskStatus:
        """The job's status; with ``timeout``, the call (retries included) ends within that many seconds."""
        job_id = validate_job_id(job_id)
        attempts = self._attempts(f"Polling HitPaw job {job_id!r}", deadline=_deadline_in(timeout))
        parse = functools.partial(_api.parse_task_status, job_id=job_id)
        return self._call(_api.task_status_request(job_id), parse, attempts)

    def _call(self, request: _api.ApiRequest, parse: Parser[T], attempts: Attempts) -> T:
        settings = self.settings
        url = request.url(settings.base_url)
        attempts.secrets = (*attempts.secrets, settings.api_key)

        def attempt() -> T:
            answer = _transport.post_json_sync(
                self.session,
                url,
                request.body,
                attempts=attempts,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                verify=settings.verify,
                secret=settings.api_key,
            )
            return parse(answer.status, answer.body, answer.retry_after)

        self._sending(request)
        try:
            return _transport.retry_sync(attempt, attempts)
        except HitPawAuthenticationError as err:
            raise self._key_refused(err, request) from None

    def wait_for_completion(
        self, job_id: str, poll_interval: float = 3.0, timeout: float = 3600.0
    ) -> TaskStatus:
        """Poll until the job is ``COMPLETED`` and return its status, holding this process meanwhile.

        Follows the same rule as the trigger (:class:`~airflow_provider_hitpaw._wait.JobWatch`): faults
        that outlast a poll's retries do not end the wait, and no poll runs past ``timeout``.
        """
        job_id = validate_job_id(job_id)
        watch = JobWatch(job_id, time.time() + timeout, poll_interval, self.log)
        while True:
            try:
                status = self.get_task_status(job_id, timeout=watch.poll_budget(time.time()))
            except HitPawError as err:
                event = watch.fault(err)
            else:
                event = watch.observe(status)
            if event is None:
                pause = watch.pause(time.time())
                if pause is not None:
                    _transport._pause(pause)
                    continue
                event = watch.timed_out()
            event.raise_unless_completed()
            return status

    def test_connection(self) -> tuple[bool, str]:
        """Prove the key without spending coins: HitPaw answers a status query for an unknown job
        with an authentication error under a bad key and with a request error under a good one.

        One attempt only: the form's button should answer in seconds, not after a minute of retries.
        """
        try:
            return self._probe_key()
        finally:
            self.close()  # the form's hook lives on in the webserver: its connections must not

    def _probe_key(self) -> tuple[bool, str]:
        try:
            attempts = Attempts(_api.RetryPolicy(max_attempts=1), what="Testing the HitPaw connection")
            parse = functools.partial(_api.parse_task_status, job_id=_PROBE_JOB_ID)
            self._call(_api.task_status_request(_PROBE_JOB_ID), parse, attempts)
        except HitPawAuthenticationError as err:
            return False, str(err)  # names the connection and HitPaw's code (see _key_refused)
        except (HitPawInvalidRequestError, HitPawInsufficientCoinsError):
            # Both are answers HitPaw gives only after it accepted the key.
            return True, "HitPaw accepted the API key."
        except HitPawError as err:
            if err.retryable:
                return False, f"HitPaw could not be reached: {err.detail}"
            return False, str(err)
        except Exception as err:
            return False, _transport.scrub(f"{type(err).__name__}: {err}", self._api_key_or_empty())
        return True, "HitPaw accepted the API key."

    def _api_key_or_empty(self) -> str:
        return self.settings.api_key if "settings" in self.__dict__ else ""

    # --- many at once --------------------------------------------------------------------------------

    def submit_segmentations(
        self,
        file_urls: Sequence[str],
        *,
        max_in_flight: int = 8,
        on_result: Callable[[int, SegmentationJob | HitPawError], None] | None = None,
        stop_on: Callable[[SegmentationJob | HitPawError], bool] | None = None,
        stop: threading.Event | None = None,
        budget: CoinBudget | None = None,
        checkpoint: Callable[[], None] | None = None,
    ) -> list[SegmentationJob | HitPawError]:
        """Submit many images, ``max_in_flight`` at a time; one result (a job, or its error) per URL.

        When HitPaw answers 429, every submission of the batch waits out one shared back-off, instead of
        each retrying on its own clock and keeping the limit hit; a rate-limited image is tried again,
        not dropped. ``on_result`` is called in the caller's thread as each image is done, so that the
        caller can record jobs (and what they cost) as they are created; if the caller is interrupted,
        every answer that arrived still reaches ``on_result`` first. ``stop_on`` ends the batch early at
        the first result it accepts, and setting ``stop`` does so from another thread: nothing more is
        sent, and the answers under way still arrive. A ``budget`` admits a submission only while the coins
        spent and in flight stay within it; the images it cannot cover end as ``HitPawBudgetError``.
        ``checkpoint`` is called in the caller's thread at least every half second, and at once on an
        interruption, for the caller to make durable what it recorded.
        """
        _ = self.session  # opened once, here, not raced for by the threads

        def submit(url: str, gate: _batch.SharedRateLimitGate, stop: threading.Event) -> SegmentationJob:
            attempts = _batch.attempts_for(
                self.retry_policy,
                gate,
                stop,
                idempotent=False,
                what="Submitting an image to HitPaw",
                logger=self.log,
            )
            job = self._call(_api.submit_request(url), _api.parse_submission, attempts)
            return dataclasses.replace(job, resent=attempts.resent) if attempts.resent else job

        return _batch.call_many(
            list(file_urls),
            submit,
            policy=self.retry_policy,
            max_in_flight=max_in_flight,
            on_result=on_result,
            stop_on=stop_on,
            stop=stop,
            budget=budget,
            checkpoint=checkpoint,
        )

    def get_task_statuses(
        self, job_ids: Sequence[str], *, max_in_flight: int = 8
    ) -> list[TaskStatus | HitPawError]:
        """The status of many jobs, ``max_in_flight`` polls at a time; an error stands for a job's status
        where its poll failed."""
        ids = [validate_job_id(job_id) for job_id in job_ids]
        _ = self.session

        def poll(job_id: str, gate: _batch.SharedRateLimitGate, stop: threading.Event) -> TaskStatus:
            attempts = _batch.attempts_for(
                self.retry_policy, gate, stop, what=f"Polling HitPaw job {job_id!r}", logger=self.log
            )
            parse = functools.partial(_api.parse_task_status, job_id=job_id)
            return self._call(_api.task_status_request(job_id), parse, attempts)

        return _batch.call_many(ids, poll, policy=self.retry_policy, max_in_flight=max_in_flight)

    # --- uploads: the OSS pre-signed PUT -----------------------------------------------------------

    def presign_upload(
        self, filename: str, content_type: str, expire_seconds: int | None = None
    ) -> PresignedUpload:
        """A pre-signed PUT URL for one file (free: no coins), valid ``expire_seconds`` (60 to 7200)."""
        request = _api.presign_request(filename, content_type, expire_seconds)
        return self._call(request, _api.parse_presign, self._attempts("Pre-signing an upload"))

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
            request = _api.presign_batch_request(chunk, expire_seconds)
            results.extend(self._call(request, parse, self._attempts("Pre-signing uploads")))
        return results

    def upload(self, presigned: PresignedUpload, data: bytes | BinaryIO) -> None:
        """PUT ``data`` to ``presigned.upload_url`` as ``presigned.content_type``; retried like API calls.

        A stream is sent as it is read (a 50 MB file is not loaded into memory); it is retried only when
        it can be rewound to where it started. A refusal by the storage (HTTP 4xx) is final: 403 means a
        signature that does not match (wrong Content-Type) or has expired.
        """
        headers: dict[str, str | None] = {"Content-Type": presigned.content_type, _api.API_KEY_HEADER: None}
        start = _stream_position(data)
        query = urlsplit(presigned.upload_url).query
        # Each signed value on its own too: a storage's error page quotes the signature, not the query.
        secrets = [query, *(value for _, value in parse_qsl(query) if len(value) >= 8)]
        shown = _api.url_without_query(presigned.upload_url)
        rewindable = isinstance(data, bytes | bytearray) or start is not None
        policy = self.retry_policy if rewindable else _api.RetryPolicy(max_attempts=1)
        attempts = Attempts(
            policy,
            deadline=_deadline_in(self.settings.download_timeout),
            what=f"Uploading to {shown}",
            logger=self.log,
            secrets=(self.settings.api_key, *secrets),
        )

        def attempt() -> None:
            if start is not None:
                data.seek(start)  # type: ignore[union-attr]
            _transport.put_sync(
                self._storage_session,
                presigned.upload_url,
                data,
                headers,
                attempts=attempts,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                verify=self.settings.verify,
                secrets=secrets,
                shown=shown,
            )

        _transport.retry_sync(attempt, attempts)
        self.log.debug("Uploaded %s (%s)", presigned.object_key, presigned.content_type)

    # --- result downloads ------------------------------------------------------------------------------

    def download_attempts(self, what: str) -> Attempts:
        """The attempts of one result download: the connection's ``download_timeout`` bounds them all."""
        attempts = self._attempts(what, deadline=_deadline_in(self.settings.download_timeout))
        attempts.secrets = (self.settings.api_key,)
        return attempts

    def download_once(self, url: str, write: Callable[[bytes], object], attempts: Attempts) -> int:
        """One attempt at downloading a result link into ``write`` (see :meth:`download_attempts`): capped
        at the connection's ``max_download_bytes``, redirects checked hop by hop, never with the key."""
        return _transport.download_sync(
            self._storage_session,
            url,
            write,
            attempts=attempts,
            limit=self.settings.max_download_bytes,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            verify=self.settings.verify,
        )


def _stream_position(data: bytes | BinaryIO) -> int | None:
    """Where a rewindable stream starts, or None (bytes, or a stream that cannot seek)."""
    if isinstance(data, bytes | bytearray):
        return None
    try:
        return data.tell() if data.seekable() else None
    except (AttributeError, OSError, ValueError):
        return None


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
            ssl_context = await asyncio.to_thread(_transport.ssl_context, settings.verify)
            if self.share_client:
                self._shared_key = (settings.base_url, settings.verify, id(ssl_context))
                self._client = _transport.SHARED_CLIENTS.acquire(self._shared_key, ssl_context)
            else:
                self._client = _transport.new_client(ssl_context)
            return self._client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        if self._shared_key is not None:
            key, self._shared_key = self._shared_key, None
            await _transport.SHARED_CLIENTS.release(key, client)
        else:
            await client.close()

    async def __aenter__(self) -> HitPawAsyncHook:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def submit_segmentation(self, file_url: str) -> SegmentationJob:
        attempts = self._attempts("Submitting an image to HitPaw", idempotent=False)
        return await self._call(_api.submit_request(file_url), _api.parse_submission, attempts)

    async def get_task_status(self, job_id: str, *, timeout: float | None = None) -> TaskStatus:
        """The job's status; with ``timeout``, the call (retries included) ends within that many seconds."""
        job_id = validate_job_id(job_id)
        attempts = self._attempts(f"Polling HitPaw job {job_id!r}", deadline=_deadline_in(timeout))
        parse = functools.partial(_api.parse_task_status, job_id=job_id)
        return await self._call(_api.task_status_request(job_id), parse, attempts)

    async def _call(self, request: _api.ApiRequest, parse: Parser[T], attempts: Attempts) -> T:
        client = await self._get_client()
        settings = await self.get_settings()
        url = request.url(settings.base_url)
        attempts.secrets = (*attempts.secrets, settings.api_key)
        headers = _api.request_headers(settings.api_key)

        async def attempt() -> T:
            answer = await _transport.post_json_async(
                client,
                url,
                request.body,
                headers=headers,
                attempts=attempts,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                secret=settings.api_key,
            )
            return parse(answer.status, answer.body, answer.retry_after)

        self._sending(request)
        try:
            return await _transport.retry_async(attempt, attempts)
        except HitPawAuthenticationError as err:
            raise self._key_refused(err, request) from None


def _without_form_prefix(extra: dict[str, Any]) -> dict[str, Any]:
    """Airflow 2.11's form may store extra fields as ``extra__hitpaw__<name>``: read both spellings."""
    prefix = f"extra__{_connection_form.CONN_TYPE}__"
    return {**{k.removeprefix(prefix): v for k, v in extra.items() if k.startswith(prefix)}, **extra}
