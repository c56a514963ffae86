"""How the hooks move bytes: one attempt loop, and the rules every request meets on either HTTP library.

Every request of the package (the API calls of both hooks, the upload PUT, the result download) goes
through :func:`retry_sync` or :func:`retry_async` with an :class:`Attempts`, which owns the retry policy,
the total deadline, the lost-submission rule and the shared rate-limit gate; and each single exchange
reads its answer through a :class:`BodyDecoder`, which owns the size cap. What is left at a call site is
what to send and how to parse the answer. The failure of each library maps to the provider's errors here,
in one place per library.

requests and aiohttp are imported inside the functions that use them: the triggerer loads this module
for the trigger and must not pay for requests, a worker must not pay for aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import urljoin, urlsplit

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw._addresses import AddressPolicy, is_ip_literal
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawConnectionError,
    HitPawError,
    HitPawRateLimitError,
    HitPawResponseError,
    HitPawSubmissionUnknownError,
    HitPawTLSError,
    HitPawUntrustedAnswerError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator, Mapping

    import aiohttp
    import requests

T = TypeVar("T")

log = logging.getLogger(__name__)

#: Seconds to open a TCP/TLS connection, and to wait for the next bytes once the request is sent.
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_READ_TIMEOUT: Final = 30.0
#: An API answer is a small JSON document; anything longer is not HitPaw speaking.
MAX_ANSWER_BYTES: Final = 1024 * 1024
#: Redirect hops a result download follows at most (each hop is checked like the first URL).
MAX_REDIRECTS: Final = 5
#: What the provider can decode, and so what it asks for.
ACCEPT_ENCODING: Final = "gzip, deflate"
_READ_SIZE: Final = 64 * 1024


def _pause(seconds: float) -> None:
    """The synchronous side's only wait, so that tests can record back-off delays instead of sleeping."""
    time.sleep(seconds)


async def _pause_async(seconds: float) -> None:
    await asyncio.sleep(seconds)


#: Secrets shorter than this are not scrubbed from text (as Airflow's own masker): taking every "k" out of
#: an answer would break it, and so short a key protects nothing.
MIN_SECRET_LENGTH: Final = 5


def scrub(text: str, *secrets: str) -> str:
    """Remove secrets from foreign text (an exception message, an echoed header) before it can reach a
    log or a task."""
    for secret in secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, "***")
    return text


def scrub_bytes(body: bytes, secret: str) -> bytes:
    """Take the key out of an answer before it is parsed: error messages quote answers, and a proxy's error
    page may echo the request's headers. Taken out of the bytes, and out of every string of the JSON
    document they are (a JSON encoder may escape any character of the key: ``a\\/b`` is ``a/b``)."""
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return body
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # Not JSON: an error page or a cut-short answer, quoted at most. Its JSON escapes are read first
        # (a cut-short JSON body still spells the key ``\u0073ecret``).
        text = _JSON_ESCAPE.sub(_unescaped, body.decode("utf-8", errors="replace"))
        return text.replace(secret, "***").encode()
    try:
        # Written anew from what was parsed, never passed on as sent: the raw text may hold the key where
        # the parsed document does not (a field given twice keeps its last value, escapes spell it otherwise).
        return json.dumps(_scrub_document(document, secret)).encode()
    except RecursionError:
        # Nested too deep to walk: still HitPaw's JSON (a paid job's answer must stay readable).
        return body.replace(secret.encode(), b"***")


_JSON_ESCAPE: Final = re.compile(r"\\u([0-9a-fA-F]{4})|\\(/)")


def _unescaped(match: re.Match[str]) -> str:
    return chr(int(match.group(1), 16)) if match.group(1) else "/"


def _scrub_document(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, list):
        return [_scrub_document(item, secret) for item in value]
    if isinstance(value, dict):
        return {
            (key if key in _api.FIELD_NAMES else key.replace(secret, "***")): _scrub_document(item, secret)
            for key, item in value.items()
        }
    return value


# --- the size cap --------------------------------------------------------------------------------------


class BodyDecoder:
    """Decodes a body as its raw bytes arrive, and stops it at ``limit`` decoded bytes.

    Compressed bodies are inflated piece by piece with a bound on each piece, so a small gzip body that
    inflates a thousandfold is stopped at the limit instead of filling memory or disk first.
    """

    def __init__(self, encoding: str | None, limit: int, what: str) -> None:
        self.limit = limit
        self.what = what
        self.raw_bytes = 0
        self.decoded_bytes = 0
        spelled = (encoding or "identity").strip().lower()
        self._inflater: Any = None
        self._started = False
        if spelled in ("gzip", "x-gzip", "deflate"):
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
            self._raw_deflate_allowed = spelled == "deflate"
        elif spelled not in ("", "identity"):
            raise HitPawResponseError(
                f"{what} came with Content-Encoding {spelled[:40]!r}, which was not asked for"
            )

    def feed(self, raw: bytes) -> Iterator[bytes]:
        self.raw_bytes += len(raw)
        if self.raw_bytes > self.limit:
            # Compressed bytes that inflate to nothing (empty deflate blocks, sent without end) count too.
            raise HitPawUntrustedAnswerError(
                f"{self.what} is larger than {self.limit:,} bytes as sent; not read further"
            )
        if self._inflater is None:
            yield self._counted(raw)
            return
        data = raw
        while data:
            try:
                piece = self._inflater.decompress(data, _READ_SIZE)
            except zlib.error as err:
                if self._started or not self._raw_deflate_allowed:
                    raise HitPawResponseError(f"{self.what} is not validly compressed ({err})") from None
                # "deflate" without its zlib header, as some servers send it.
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                self._raw_deflate_allowed = False
                continue
            self._started = True
            data = self._inflater.unconsumed_tail
            if piece:
                yield self._counted(piece)
            if self._inflater.eof:
                rest = data or self._inflater.unused_data
                if rest[:2] == b"\x1f\x8b":  # a gzip body of several members
                    self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
                    data = rest
                elif rest:
                    raise HitPawResponseError(f"{self.what} has bytes after its compressed body")

    def finish(self) -> Iterator[bytes]:
        if self._inflater is None:
            return
        try:
            rest = self._inflater.flush()
        except zlib.error as err:
            raise HitPawResponseError(f"{self.what} is not validly compressed ({err})") from None
        if rest:
            yield self._counted(rest)
        if not self._inflater.eof:
            raise HitPawResponseError(f"{self.what} ends inside its compressed body")

    def _counted(self, piece: bytes) -> bytes:
        self.decoded_bytes += len(piece)
        if self.decoded_bytes > self.limit:
            raise HitPawUntrustedAnswerError(
                f"{self.what} is larger than {self.limit:,} bytes; not read further"
            )
        return piece


# --- the one attempt loop -------------------------------------------------------------------------------


class RateLimitGate(Protocol):
    """A back-off that several threads share (see the batch submission)."""

    def wait(self, deadline: float | None) -> None: ...

    def hold(self, error: HitPawError) -> None: ...

    def passed(self) -> None: ...


class HitPawNotSentError(HitPawError):
    """The request was not sent: the work it belonged to was interrupted first (nothing was charged)."""


#: How often one request may be turned away with 429 through a shared gate before it is reported failed.
RATE_LIMIT_BUDGET: Final = 30


@dataclass
class Attempts:
    """The attempts at one request: how many, how far apart, and until when.

    :param deadline: a ``time.monotonic()`` after which no attempt starts and no attempt runs on; each
        attempt's time-outs shrink to the time left.
    :param idempotent: False for a submission, which HitPaw charges for: an attempt whose request may have
        landed is repeated ``policy.ambiguous_resubmits`` times at most, then
        :class:`HitPawSubmissionUnknownError` ends it.
    :param gate: a back-off shared with other requests: a 429 pauses them all, and counts against
        :data:`RATE_LIMIT_BUDGET` instead of the attempts meant for faults.
    :param stop: once set, no further attempt starts (:class:`HitPawNotSentError`).
    """

    policy: _api.RetryPolicy
    deadline: float | None = None
    idempotent: bool = True
    gate: RateLimitGate | None = None
    stop: threading.Event | None = None
    what: str = "HitPaw call"
    logger: Any = field(default=log, repr=False)
    #: Taken out of every error's message before it is logged or raised: whatever answered may have
    #: echoed them (a redirect's path, a storage's error page).
    secrets: tuple[str, ...] = field(default=(), repr=False)
    number: int = 0
    _resent: int = 0
    _rate_limited: int = 0

    @property
    def resent(self) -> int:
        """Submissions sent again after a lost answer (each may have been charged)."""
        return self._resent

    def time_left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def timeouts(self, connect: float, read: float) -> tuple[float, float]:
        """The time-outs of one attempt: the configured ones, or the time left if that is shorter."""
        left = self.time_left()
        if left is None:
            return connect, read
        left = max(left, 0.001)
        return min(connect, left), min(read, left)

    def begin(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise self._last(HitPawNotSentError(f"{self.what} was not sent: the work was interrupted"))
        self.number += 1

    def succeeded(self) -> None:
        if self.gate is not None:
            self.gate.passed()

    def _last(self, error: HitPawError) -> HitPawError:
        """What giving up after ``error`` amounts to: a submission whose earlier answer was lost may have
        been charged whatever the last attempt said, so the caller must not send it again."""
        if not self.idempotent and self._resent:
            unknown = unknown_submission(error)
            unknown.__cause__ = error
            return unknown
        return error

    def failed(self, error: HitPawError) -> float:
        """The pause before the next attempt; raises ``error`` (or what it amounts to) when there is none."""
        scrub_error(error, *self.secrets)
        if not self.idempotent and error.retryable and _api.submission_may_have_landed(error):
            self._resent += 1
            if self._resent > self.policy.ambiguous_resubmits:
                raise unknown_submission(error) from error
            self.logger.warning(
                "The answer to a submission was lost (%s); HitPaw may have accepted it. Sending it once "
                "more: at worst this image is charged twice",
                error,
            )
        if self.gate is not None and isinstance(error, HitPawRateLimitError):
            self._rate_limited += 1
            if self._rate_limited > RATE_LIMIT_BUDGET:
                raise self._last(error)
            self.number -= 1
            self.gate.hold(error)
            return 0.0
        if not self.policy.should_retry(error, self.number):
            raise self._last(error)
        delay = self.policy.delay(error, self.number)
        left = self.time_left()
        if left is not None and left <= delay:
            raise self._last(error)  # no time for another attempt: the caller hears the last fault
        if self.stop is not None and self.stop.is_set():
            raise self._last(error)
        self.logger.warning(
            "%s failed (%s); attempt %d of %d, retrying in %.1f s",
            self.what,
            error,
            self.number,
            self.policy.max_attempts,
            delay,
        )
        return delay


def scrub_error(error: HitPawError, *secrets: str) -> None:
    """Take secrets out of an error's message, in place (its family and fields stay as they are)."""
    cleaned = scrub(error.message, *secrets)
    if cleaned != error.message:
        error.message = cleaned
        error.args = (cleaned,)


def retry_sync(attempt: Callable[[], T], attempts: Attempts) -> T:
    """Run ``attempt`` until it returns, or until :meth:`Attempts.failed` gives up."""
    while True:
        attempts.begin()
        if attempts.gate is not None:
            attempts.gate.wait(attempts.deadline)
        try:
            result = attempt()
        except HitPawError as err:
            _pause(attempts.failed(err))
        else:
            attempts.succeeded()
            return result


async def retry_async(attempt: Callable[[], Awaitable[T]], attempts: Attempts) -> T:
    """:func:`retry_sync` on the event loop."""
    while True:
        attempts.begin()
        try:
            result = await attempt()
        except HitPawError as err:
            await _pause_async(attempts.failed(err))
        else:
            attempts.succeeded()
            return result


def unknown_submission(error: HitPawError) -> HitPawSubmissionUnknownError:
    return HitPawSubmissionUnknownError(
        f"the answer to a submission was lost, and sending it again brought none back ({error}); HitPaw "
        "may have accepted the image and "
        "charged for it, and its API offers no way to look the job up. To know, compare the account's "
        "coin balance in HitPaw's dashboard with what the task logs say was paid: "
        "if it dropped by more, HitPaw has the job (its support can find it). Running the task again "
        "pays for this image again",
        http_status=error.http_status,
    )


@dataclass(frozen=True)
class Answer:
    """An HTTP answer, read whole (and capped)."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def retry_after(self) -> str | None:
        return self.headers.get("Retry-After")


# --- requests -------------------------------------------------------------------------------------------


def requests_session(pool_size: int, policy: AddressPolicy | None = None) -> requests.Session:
    """A session with no retries of its own (ours know HitPaw's codes) and one pool of ``pool_size``,
    whose connections every exchange's deadline can cut off (see :func:`_exchange`).

    With ``policy``, every connection it opens must reach an address the policy allows: for the hosts a
    remote answer names (result links, upload targets).
    """
    import requests

    session = requests.Session()
    adapter = _adapter(pool_size, policy)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["Accept-Encoding"] = ACCEPT_ENCODING
    return session


class _Exchange:
    """One request on its way, on this thread: the connection it uses (so that its deadline can cut it
    off), whether any byte of it went out (which decides whether a lost submission may have landed), and
    whether the deadline passed.

    requests' time-outs bound each socket operation, not an exchange: a server that sends its headers a
    byte at a time holds a request for ever. The deadline here shuts the socket down instead.
    """

    def __init__(self) -> None:
        self.sent = False
        self.expired = False
        self._conn: Any = None
        self._lock = threading.Lock()

    @property
    def attached(self) -> bool:
        """Whether a connection took this exchange (only then does ``sent`` say what went out)."""
        return self._conn is not None

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            expired = self.expired
        if expired:
            _shut(conn)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            conn = self._conn
        _shut(conn)


def _shut(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


_CURRENT = threading.local()


@contextlib.contextmanager
def _exchange(seconds: float) -> Iterator[_Exchange]:
    """The exchange of this thread for the next ``seconds``, after which its connection is cut."""
    exchange = _Exchange()
    previous = getattr(_CURRENT, "exchange", None)
    _CURRENT.exchange = exchange
    timer = threading.Timer(max(0.0, seconds), exchange.expire)
    timer.daemon = True
    timer.start()
    try:
        yield exchange
    finally:
        timer.cancel()
        _CURRENT.exchange = previous


def _current_exchange() -> _Exchange | None:
    return getattr(_CURRENT, "exchange", None)


def _exchange_seconds(attempts: Attempts, connect_timeout: float, read_timeout: float) -> float:
    """How long one exchange may take in all: the time the attempts have left, or else its own time-outs."""
    left = attempts.time_left()
    return left if left is not None else connect_timeout + read_timeout


def _api_exchange_seconds(attempts: Attempts, connect_timeout: float, read_timeout: float) -> float:
    """How long one API exchange may take: its own time-outs added up, and never past the deadline. An
    answer is a few hundred bytes: one dripped for longer would otherwise hold a trigger's whole wait."""
    return min(_exchange_seconds(attempts, connect_timeout, read_timeout), connect_timeout + read_timeout)


def post_json_sync(
    session: requests.Session,
    url: str,
    body: dict[str, Any],
    *,
    attempts: Attempts,
    connect_timeout: float,
    read_timeout: float,
    verify: bool | str,
    secret: str,
) -> Answer:
    """One POST of ``body`` as JSON; the answer read whole, up to :data:`MAX_ANSWER_BYTES`, by the
    attempt's deadline (or within its own time-outs, added up)."""
    with _exchange(_api_exchange_seconds(attempts, connect_timeout, read_timeout)) as exchange:
        try:
            response = send_sync(
                session,
                "POST",
                url,
                attempts=attempts,
                timeouts=(connect_timeout, read_timeout),
                verify=verify,
                failure=lambda err: scrub(f"{type(err).__name__}: {err}", secret),
                json=body,
            )
            with response:
                data = bytearray()
                read_body_sync(response, attempts, MAX_ANSWER_BYTES, "the API's answer", data.extend)
                return Answer(response.status_code, response.headers, scrub_bytes(bytes(data), secret))
        except HitPawError as err:
            raise _past_deadline(err, exchange, "the API's answer") from None


def send_sync(
    session: requests.Session,
    method: str,
    url: str,
    *,
    attempts: Attempts,
    timeouts: tuple[float, float],
    verify: bool | str,
    failure: Callable[[Exception], str],
    **options: Any,
) -> requests.Response:
    """Send one request and return its answer unread, within the attempt's time-outs; a requests failure
    becomes its HitPaw family, told by ``failure`` (which leaves out what must not be shown).

    Redirects are never followed (the key, or a signed credential, would go along to wherever they
    point), and ``verify`` is given per request: requests lets ``REQUESTS_CA_BUNDLE`` override a session's.
    """
    import requests

    send = getattr(session, method.lower())  # session.post, .put, .get: as callers and doubles know them
    try:
        return send(  # type: ignore[no-any-return]
            url,
            timeout=attempts.timeouts(*timeouts),
            verify=verify,
            allow_redirects=False,
            stream=True,
            **options,
        )
    except requests.RequestException as err:
        raise requests_failure(err, failure(err), _current_exchange()) from None


def refusal(response: requests.Response, text: str) -> HitPawError:
    """The error a non-2xx answer of a storage stands for, by its HTTP status (``Retry-After`` kept)."""
    return _api.error_for_code(
        None,
        response.status_code,
        text,
        retry_after=_api.parse_retry_after(response.headers.get("Retry-After")),
    )


def _past_deadline(err: HitPawError, exchange: _Exchange, what: str) -> HitPawError:
    """A failure caused by the exchange's deadline cutting the connection, told as such."""
    if exchange.expired and isinstance(err, HitPawConnectionError):
        return HitPawConnectionError(f"{what} did not come by the deadline", request_sent=err.request_sent)
    return err


def read_body_sync(
    response: requests.Response,
    attempts: Attempts,
    limit: int,
    what: str,
    write: Callable[[bytes], object],
) -> int:
    """Stream ``response``'s body, decoded and capped, into ``write``; return the raw bytes read.

    Each read waits at most the attempt's time left, and the deadline is checked between reads; the
    exchange's own deadline cuts whatever is left.
    """
    decoder = BodyDecoder(response.headers.get("Content-Encoding"), limit, what)
    try:
        for raw in _raw_pieces(response.raw):
            for piece in decoder.feed(raw):
                write(piece)
            _tighten_read_timeout(response, attempts, what)
        for piece in decoder.finish():
            write(piece)
    except HitPawError:
        raise
    except Exception as err:
        raise requests_failure(
            err, f"reading {what} failed: {type(err).__name__}", _current_exchange()
        ) from None
    return decoder.raw_bytes


def _raw_pieces(raw: Any) -> Iterator[bytes]:
    """The body's bytes as they arrive, undecoded: each piece is what one read of the socket gave, so
    that a trickle is seen as one (a plain ``read(n)`` waits for all n bytes, however slowly they come)."""
    read1 = getattr(raw, "read1", None)
    if read1 is None:  # urllib3 1.x
        yield from raw.stream(_READ_SIZE, decode_content=False)
        return
    while True:
        piece = read1(_READ_SIZE, decode_content=False)
        if not piece:
            return
        yield piece


def _tighten_read_timeout(response: requests.Response, attempts: Attempts, what: str) -> None:
    left = attempts.time_left()
    if left is None:
        return
    if left <= 0:
        raise HitPawConnectionError(f"reading {what} ran past the deadline")
    sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(0.001, min(left, sock.gettimeout() or left)))


def requests_failure(err: Exception, text: str, exchange: _Exchange | None = None) -> HitPawConnectionError:
    """The error family of a requests (or urllib3) failure, told as ``text``, which the caller scrubbed.

    Whether the request had left decides on resubmitting: the exchange knows whether any byte went out
    (a TLS handshake cut short sent none); without one, only a failed connect proves nothing was sent.
    Only a failed certificate check is permanent.
    """
    import requests
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    if _is_certificate_failure(err):
        return HitPawTLSError(text, request_sent=False)
    if exchange is not None and exchange.attached:
        return HitPawConnectionError(text, request_sent=exchange.sent)
    reason = getattr(err.args[0], "reason", None) if err.args else None
    never_sent = isinstance(err, requests.exceptions.ConnectTimeout) or isinstance(
        reason, NewConnectionError | ConnectTimeoutError
    )
    return HitPawConnectionError(text, request_sent=not never_sent)


def _is_certificate_failure(err: BaseException) -> bool:
    """Whether a TLS failure is the certificate's (a configuration problem or an attack: not transient),
    rather than a handshake cut short (a network fault like any other)."""
    seen: set[int] = set()
    todo: list[Any] = [err]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, ssl.SSLCertVerificationError | ssl.CertificateError):
            return True
        if isinstance(item, ssl.SSLError) and getattr(item, "reason", None) == "CERTIFICATE_VERIFY_FAILED":
            return True
        todo.extend([*item.args, item.__cause__, item.__context__, getattr(item, "reason", None)])
    return False


def put_sync(
    session: requests.Session,
    url: str,
    data: Any,
    headers: dict[str, str | None],
    *,
    attempts: Attempts,
    connect_timeout: float,
    read_timeout: float,
    verify: bool | str,
    secrets: list[str],
    shown: str,
) -> None:
    """One PUT of ``data`` (a storage's pre-signed URL), by the attempt's deadline; raises the error a
    failure stands for."""
    _check_target(url, session, shown)
    with _exchange(_exchange_seconds(attempts, connect_timeout, read_timeout)) as exchange:
        try:
            response = send_sync(
                session,
                "PUT",
                url,
                attempts=attempts,
                timeouts=(connect_timeout, read_timeout),
                verify=verify,
                failure=lambda err: scrub(f"uploading to {shown}: {type(err).__name__}: {err}", *secrets),
                data=data,
                headers=headers,
            )
        except HitPawError as err:
            raise _past_deadline(err, exchange, f"the upload to {shown}") from None
        with response:
            if 200 <= response.status_code < 300:
                return
            # The storage's own words (an S3 error code says what went wrong), without any signed value.
            said = scrub(_api.quote_body(_first_bytes(response, 2048)), *secrets)
    raise refusal(response, f"the storage refused the upload to {shown}: {said}")


def _first_bytes(response: requests.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a body, decoded; empty when they cannot be read."""
    try:
        raw = next(response.raw.stream(limit, decode_content=False), b"")
        decoder = BodyDecoder(response.headers.get("Content-Encoding"), limit, "an error page")
        return b"".join(decoder.feed(raw))[:limit]
    except Exception:
        return b""


def download_sync(
    session: requests.Session,
    url: str,
    write: Callable[[bytes], object],
    *,
    attempts: Attempts,
    limit: int,
    connect_timeout: float,
    read_timeout: float,
    verify: bool | str,
) -> int:
    """One download of ``url`` into ``write``, following up to :data:`MAX_REDIRECTS` redirects, each hop
    checked like the first, all by the attempt's deadline; returns the bytes written. Bodies of failed
    answers are never read or quoted.
    """
    with _exchange(_exchange_seconds(attempts, connect_timeout, read_timeout)) as exchange:
        for _ in range(MAX_REDIRECTS + 1):
            shown = _api.url_without_query(url)
            try:
                location = _download_hop(
                    session, url, write, attempts, limit, connect_timeout, read_timeout, verify
                )
            except HitPawError as err:
                raise _past_deadline(err, exchange, f"the download of {shown}") from None
            if isinstance(location, int):
                return location
            try:
                url = urljoin(url, location)
            except ValueError:
                raise HitPawUntrustedAnswerError(f"{shown} redirected to a malformed URL") from None
    raise HitPawUntrustedAnswerError(
        f"downloading {_api.url_without_query(url)} took more than {MAX_REDIRECTS} redirects"
    )


def _download_hop(
    session: requests.Session,
    url: str,
    write: Callable[[bytes], object],
    attempts: Attempts,
    limit: int,
    connect_timeout: float,
    read_timeout: float,
    verify: bool | str,
) -> int | str:
    """One hop of a download: the bytes written, or where a redirect points."""
    shown = _api.url_without_query(url)
    _check_target(url, session, shown)
    response = send_sync(
        session,
        "GET",
        url,
        attempts=attempts,
        timeouts=(connect_timeout, read_timeout),
        verify=verify,
        # requests' messages quote the URL with its query (a signed link's credential): not shown.
        failure=lambda err: f"downloading {shown} failed: {type(err).__name__}",
        # None removes a header a shared session may carry: result links are public.
        headers={_api.API_KEY_HEADER: None},
    )
    with response:
        if response.is_redirect:
            return str(response.headers.get("Location", ""))
        if not 200 <= response.status_code < 300:
            raise refusal(response, f"downloading {shown} answered HTTP {response.status_code}")
        expected = _content_length(response.headers)
        counter = _Counter(write)
        raw = read_body_sync(response, attempts, limit, f"the download of {shown}", counter)
        if expected is not None and raw != expected:
            raise HitPawResponseError(
                f"downloading {shown} gave {raw} bytes where Content-Length said {expected}",
                http_status=response.status_code,
            )
        return counter.count


class _Counter:
    """A writer that counts what passes through it."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self.count = 0

    def __call__(self, piece: bytes) -> None:
        self.count += len(piece)
        self._write(piece)


def _content_length(headers: Mapping[str, str]) -> int | None:
    try:
        length = int(headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _check_target(url: str, session: requests.Session, shown: str) -> None:
    """Refuse a URL a remote answer named before connecting to it: another scheme, credentials in it, or
    a host whose addresses the session's policy does not allow. The connection itself checks the address
    it reached again (a name may resolve differently the second time)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise HitPawUntrustedAnswerError(f"{shown[:200]!r} is not a well-formed URL") from None
    if parts.scheme not in ("http", "https") or not host:
        raise HitPawUntrustedAnswerError(f"{shown[:200]!r} is not an http(s) URL with a host")
    if "@" in parts.netloc or "\\" in url:
        raise HitPawUntrustedAnswerError(f"{shown[:200]} carries credentials or a backslash in its host")
    policy = _session_policy(session, url)
    if policy is None:
        return
    if is_ip_literal(host):
        addresses = [host]
    else:
        try:
            found = socket.getaddrinfo(
                host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
            addresses = [str(info[4][0]) for info in found]
        except (OSError, UnicodeError, ValueError) as err:
            if _proxied(session, url):
                return  # the proxy resolves the name; the connection check cannot see past it either
            raise HitPawConnectionError(f"{host} could not be resolved ({type(err).__name__})") from None
    for address in addresses:
        reason = policy.refusal(str(address))
        if reason is not None:
            raise HitPawUntrustedAnswerError(f"{shown[:200]} was refused: {reason}")


def _session_policy(session: requests.Session, url: str) -> AddressPolicy | None:
    adapter = session.get_adapter(url)
    return getattr(adapter, "address_policy", None)


def _proxied(session: requests.Session, url: str) -> bool:
    from requests.utils import get_environ_proxies

    proxies = dict(session.proxies)
    if session.trust_env:
        proxies.update(get_environ_proxies(url))
    return bool(proxies.get(urlsplit(url).scheme) or proxies.get("all"))


class UnsafePeerError(Exception):
    """Raised inside a connection that reached an address its policy refuses (not an ``OSError``, so that
    urllib3 does not retry it as a network fault)."""


def _adapter(pool_size: int, policy: AddressPolicy | None) -> Any:
    """requests' adapter, with urllib3 connections that tell the current exchange which connection it
    uses and when its first byte goes out, and (with ``policy``) that check the address they reached."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def checked(connection: Any, sock: socket.socket) -> socket.socket:
        if policy is None or getattr(connection, "proxy", None) is not None:
            return sock
        reason = policy.refusal(str(sock.getpeername()[0]))
        if reason is not None:
            sock.close()
            raise UnsafePeerError(reason)
        return sock

    def sending(connection: Any) -> None:
        exchange = _current_exchange()
        if exchange is not None:
            if connection.sock is None:
                connection.connect()  # a connect that fails has sent nothing
            exchange.sent = True

    class TrackedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return checked(self, super()._new_conn())

        def send(self, data: Any) -> None:
            sending(self)
            super().send(data)

    class TrackedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return checked(self, super()._new_conn())

        def send(self, data: Any) -> None:
            sending(self)
            super().send(data)

    def attach(conn: Any) -> Any:
        exchange = _current_exchange()
        if exchange is not None:
            exchange.attach(conn)
        return conn

    class TrackedHTTPPool(HTTPConnectionPool):
        ConnectionCls = TrackedHTTPConnection

        def _get_conn(self, timeout: float | None = None) -> Any:
            return attach(super()._get_conn(timeout))

    class TrackedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = TrackedHTTPSConnection

        def _get_conn(self, timeout: float | None = None) -> Any:
            return attach(super()._get_conn(timeout))

    pools = {"http": TrackedHTTPPool, "https": TrackedHTTPSPool}

    class TrackedAdapter(HTTPAdapter):
        address_policy = policy

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = pools

        def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
            manager = super().proxy_manager_for(*args, **kwargs)
            manager.pool_classes_by_scheme = pools
            return manager

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return super().send(request, *args, **kwargs)
            except UnsafePeerError as err:
                shown = _api.url_without_query(str(request.url))
                raise HitPawUntrustedAnswerError(f"{shown[:200]} was refused: {err}") from None

    return TrackedAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)


# --- aiohttp --------------------------------------------------------------------------------------------


async def post_json_async(
    client: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    *,
    headers: dict[str, str],
    attempts: Attempts,
    connect_timeout: float,
    read_timeout: float,
    secret: str,
) -> Answer:
    """:func:`post_json_sync` on aiohttp: the whole exchange, body included, ends by the deadline."""
    import aiohttp

    connect, read = attempts.timeouts(connect_timeout, read_timeout)
    timeout = aiohttp.ClientTimeout(sock_connect=connect, sock_read=read)
    try:
        # A whole exchange, not just each read, ends in time: a server that drips a byte at a time never
        # trips a read time-out.
        async with asyncio.timeout(_api_exchange_seconds(attempts, connect_timeout, read_timeout)):
            async with client.post(
                url,
                json=body,
                headers={**headers, "Accept-Encoding": ACCEPT_ENCODING},
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                decoder = BodyDecoder(
                    response.headers.get("Content-Encoding"), MAX_ANSWER_BYTES, "the API's answer"
                )
                data = bytearray()
                async for raw in response.content.iter_chunked(_READ_SIZE):
                    for piece in decoder.feed(raw):
                        data.extend(piece)
                for piece in decoder.finish():
                    data.extend(piece)
                return Answer(response.status, response.headers, scrub_bytes(bytes(data), secret))
    except (TimeoutError, aiohttp.ClientError) as err:
        raise aiohttp_failure(err, secret) from None


def aiohttp_failure(err: Exception, secret: str) -> HitPawConnectionError:
    import aiohttp

    text = scrub(f"{type(err).__name__}: {err}", secret)
    if isinstance(err, aiohttp.ClientConnectorCertificateError) or _is_certificate_failure(err):
        return HitPawTLSError(text, request_sent=False)
    never_sent = isinstance(err, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return HitPawConnectionError(text, request_sent=not never_sent)


#: Connections one client keeps open to one base URL, at most: enough for a triggerer's polls (each takes
#: about a millisecond), few enough to stay a polite client.
CLIENT_CONNECTION_LIMIT: Final = 32


def new_client(ssl_context: Any) -> aiohttp.ClientSession:
    """A client carrying no secret: the key is sent per request, so that clients can be shared."""
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=CLIENT_CONNECTION_LIMIT, ssl=ssl_context),
        # Per-request timeouts come from each hook; this only bounds a request that forgot one.
        timeout=aiohttp.ClientTimeout(total=300),
        # Bodies are inflated by BodyDecoder, which caps what they inflate to.
        auto_decompress=False,
    )


class SharedClients:
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
            entry = (loop, new_client(ssl_context), 0)
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


SHARED_CLIENTS = SharedClients()


# --- TLS ------------------------------------------------------------------------------------------------


def check_ca_bundle(verify: bool | str) -> None:
    if isinstance(verify, str) and not os.path.isfile(verify):
        raise HitPawConfigurationError("extra.ca_bundle", f"no CA bundle file at {verify!r}")


def ssl_context(verify: bool | str) -> Any:
    """aiohttp's ``ssl`` argument for requests' ``verify`` (True, False, or a CA bundle path).

    A context for a CA bundle is built once per bundle file (and rebuilt when the file changes): loading
    a bundle costs milliseconds, and a triggerer starts thousands of hooks.
    """
    if verify is True:
        return True
    if verify is False:
        return False
    check_ca_bundle(verify)
    return _context_for_bundle(verify, os.stat(verify).st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _context_for_bundle(path: str, mtime_ns: int) -> Any:
    return ssl.create_default_context(cafile=path)


def resolve_addresses(host: str) -> list[str]:
    """The addresses ``host`` resolves to (the name itself for an IP literal); empty when it does not."""
    if is_ip_literal(host):
        return [host.strip("[]")]
    try:
        return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)})
    except (OSError, UnicodeError, ValueError):
        return []
