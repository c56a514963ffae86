"""What HitPaw's API says, written once: paths, payloads, answers, error codes and retry rules.

No I/O happens here. The synchronous hook (requests) and the asynchronous one (aiohttp) only move the
bytes this module describes, and hand back to it what came in; so the two can never disagree about what
an answer means, and every rule can be tested without a server.
"""

from __future__ import annotations

import ipaddress
import json
import math
import random
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawError,
    HitPawInsufficientCoinsError,
    HitPawInvalidRequestError,
    HitPawRateLimitError,
    HitPawResponseError,
    HitPawServerError,
)

DEFAULT_BASE_URL: Final = "https://api-base.hitpaw.com"
SUBMIT_PATH: Final = "/api/image-segmentation"
TASK_STATUS_PATH: Final = "/api/task-status"
API_KEY_HEADER: Final = "Apikey"

#: What one job costs today; only used to describe, never to charge.
COINS_PER_JOB: Final = 20

SUCCESS_CODE: Final = 200

AUTHENTICATION_CODES: Final = frozenset({100400000, 100401000, 110400000})
INSUFFICIENT_COINS_CODES: Final = frozenset({110402000})
INVALID_REQUEST_CODES: Final = frozenset({100400001, 100400002})
RATE_LIMIT_CODES: Final = frozenset({100429000})
SERVER_ERROR_CODES: Final = frozenset({100500000})

_CODE_FAMILIES: Final[tuple[tuple[frozenset[int], type[HitPawError]], ...]] = (
    (AUTHENTICATION_CODES, HitPawAuthenticationError),
    (INSUFFICIENT_COINS_CODES, HitPawInsufficientCoinsError),
    (INVALID_REQUEST_CODES, HitPawInvalidRequestError),
    (RATE_LIMIT_CODES, HitPawRateLimitError),
    (SERVER_ERROR_CODES, HitPawServerError),
)

#: An answer body longer than this is not quoted in an error message.
_QUOTE_LIMIT: Final = 200


class JobStatus(StrEnum):
    """A job's ``status``; HitPaw documents these three."""

    CONVERTING = "CONVERTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"


@dataclass(frozen=True)
class ApiRequest:
    """One call to HitPaw: a POST of ``body`` as JSON to ``path`` below the base URL."""

    path: str
    body: dict[str, Any]

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.path


@dataclass(frozen=True)
class SegmentationJob:
    """HitPaw's answer to a submission."""

    job_id: str
    consume_coins: int


@dataclass(frozen=True)
class TaskStatus:
    """HitPaw's answer to a status poll.

    ``status`` is kept as the string HitPaw sent: a status this code does not know is not a failure
    (HitPaw says a job has not failed until it says ``ERROR``), so it must survive to the caller.
    """

    job_id: str
    status: str
    res_url: str | None = None
    mask_url: str | None = None
    original_url: str | None = None

    @property
    def is_completed(self) -> bool:
        return self.status == JobStatus.COMPLETED

    @property
    def is_failed(self) -> bool:
        return self.status == JobStatus.ERROR

    @property
    def is_finished(self) -> bool:
        return self.is_completed or self.is_failed

    @property
    def is_known_status(self) -> bool:
        return self.status in JobStatus.__members__

    def to_dict(self) -> dict[str, str | None]:
        """The plain JSON form used at the Airflow boundary (XCom, trigger events)."""
        return asdict(self)


def submit_request(file_url: str) -> ApiRequest:
    return ApiRequest(SUBMIT_PATH, {"file_url": file_url})


def task_status_request(job_id: str) -> ApiRequest:
    return ApiRequest(TASK_STATUS_PATH, {"job_id": job_id})


def request_headers(api_key: str) -> dict[str, str]:
    """The headers of every API call; the key goes here and nowhere else."""
    return {"Content-Type": "application/json", API_KEY_HEADER: api_key}


def parse_submission(http_status: int, body: bytes, retry_after: str | None = None) -> SegmentationJob:
    data = parse_envelope(http_status, body, retry_after)
    job_id = _required_str(data, "job_id", http_status)
    coins = data.get("consume_coins", COINS_PER_JOB)
    if isinstance(coins, bool) or not isinstance(coins, int | float) or not _plausible_coins(coins):
        raise HitPawResponseError(
            f"the answer's consume_coins is not a number: {coins!r}", http_status=http_status
        )
    return SegmentationJob(job_id=job_id, consume_coins=int(coins))


#: A job's cost beyond this is no price but a broken answer (a job costs 20 coins today).
_MAX_PLAUSIBLE_COINS: Final = 10**9


def _plausible_coins(number: float) -> bool:
    # Compared as they are: math.isfinite would overflow on an int too large for a float.
    if isinstance(number, float) and not math.isfinite(number):
        return False
    return 0 <= number <= _MAX_PLAUSIBLE_COINS


def parse_task_status(http_status: int, body: bytes, retry_after: str | None = None) -> TaskStatus:
    data = parse_envelope(http_status, body, retry_after)
    status = _required_str(data, "status", http_status)
    return TaskStatus(
        job_id=_required_str(data, "job_id", http_status),
        status=status.upper(),
        res_url=_optional_str(data, "res_url"),
        mask_url=_optional_str(data, "mask_url"),
        original_url=_optional_str(data, "original_url"),
    )


def parse_envelope(http_status: int, body: bytes, retry_after: str | None = None) -> dict[str, Any]:
    """Return the ``data`` of a successful answer, or raise the error the answer stands for.

    The body's ``code`` is read first because HitPaw reports errors in it even under HTTP 200; the HTTP
    status decides only when the body says nothing usable.
    """
    document = _decode_json(body)
    if isinstance(document, dict) and _is_int(document.get("code")):
        code: int = document["code"]
        if code == SUCCESS_CODE and 200 <= http_status < 300:
            data = document.get("data")
            if not isinstance(data, dict):
                raise HitPawResponseError(
                    "the answer has no 'data' object", code=code, http_status=http_status
                )
            return data
        message = document.get("message")
        raise error_for_code(
            code,
            http_status,
            message if isinstance(message, str) and message else _default_message(code, http_status),
            retry_after=parse_retry_after(retry_after),
        )
    if http_status >= 400:
        raise error_for_code(
            None,
            http_status,
            f"HTTP {http_status} without a HitPaw answer: {_quote(body)}",
            retry_after=parse_retry_after(retry_after),
        )
    raise HitPawResponseError(
        f"the answer is not HitPaw's JSON envelope: {_quote(body)}", http_status=http_status
    )


def error_for_code(
    code: int | None, http_status: int | None, message: str, *, retry_after: float | None = None
) -> HitPawError:
    """Map HitPaw's code (or, without one, the HTTP status) to the error family a caller acts on."""
    family: type[HitPawError] | None = None
    if code is not None:
        family = next((cls for codes, cls in _CODE_FAMILIES if code in codes), None)
    if family is None:
        family = _family_for_http_status(http_status)
    if family is HitPawRateLimitError:
        return HitPawRateLimitError(message, code=code, http_status=http_status, retry_after=retry_after)
    return family(message, code=code, http_status=http_status)


def _family_for_http_status(http_status: int | None) -> type[HitPawError]:
    if http_status is None:
        return HitPawResponseError
    if http_status == 429:
        return HitPawRateLimitError
    if http_status >= 500:
        return HitPawServerError
    if http_status in (401, 403):
        return HitPawAuthenticationError
    if http_status == 402:
        return HitPawInsufficientCoinsError
    if http_status >= 400:
        return HitPawInvalidRequestError
    # A code HitPaw never documented, under a 2xx status: do not guess it away as transient.
    return HitPawError


def _default_message(code: int, http_status: int) -> str:
    return f"HitPaw answered code {code} under HTTP {http_status} without a message"


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; only the delta-seconds form, which APIs send in practice."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _required_str(data: dict[str, Any], name: str, http_status: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        raise HitPawResponseError(f"the answer has no '{name}'", code=SUCCESS_CODE, http_status=http_status)
    return value


def _optional_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and value else None


def _quote(body: bytes) -> str:
    text = body[:_QUOTE_LIMIT].decode("utf-8", errors="replace")
    return repr(text + ("..." if len(body) > _QUOTE_LIMIT else ""))


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, a transient fault is retried; the one rule both hooks follow.

    The delay doubles from ``base_delay`` up to ``max_delay`` and is drawn from its upper half, so many
    clients hit by the same outage do not come back in step. A server's ``Retry-After`` is a floor.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def should_retry(self, error: HitPawError, attempt: int) -> bool:
        """``attempt`` counts from 1: the attempt that just failed."""
        return error.retryable and attempt < self.max_attempts

    def delay(self, error: HitPawError, attempt: int) -> float:
        # The exponent is capped before it is used: a float overflows long before any sane attempt count.
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(attempt - 1, 32))
        delay = self.rng.uniform(ceiling / 2, ceiling)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_delay))
        return delay


@dataclass(frozen=True)
class ConnectionSettings:
    """What a hook needs from an Airflow connection, checked once.

    ``verify`` is requests' and aiohttp's shared meaning: True, or the path of a CA bundle.
    """

    base_url: str
    api_key: str = field(repr=False)
    verify: bool | str = True

    @classmethod
    def from_connection_fields(
        cls, *, host: str | None, port: int | None, password: str | None, extra: dict[str, Any]
    ) -> ConnectionSettings:
        api_key = (password or "").strip()
        if not api_key:
            raise HitPawConfigurationError(
                "password (API key)", "the HitPaw connection has no API key; put it in the password field"
            )
        base_url = base_url_from_host(host, port)
        if not _is_true(extra.get("allow_insecure_http")):
            refuse_clear_text_to_remote(base_url)
        ca_bundle = extra.get("ca_bundle")
        verify: bool | str = True
        if ca_bundle:
            if not isinstance(ca_bundle, str):
                raise HitPawConfigurationError("extra.ca_bundle", "must be the path of a CA bundle file")
            verify = ca_bundle
        elif not _is_true(extra.get("verify", True)):
            verify = False
        return cls(base_url=base_url, api_key=api_key, verify=verify)


def _is_true(value: Any) -> bool:
    """A connection extra's boolean, which the UI and JSON may spell as a string."""
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def refuse_clear_text_to_remote(base_url: str) -> None:
    """Plain http only to this machine: elsewhere the key would cross a network in clear text."""
    parts = urlsplit(base_url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname or ""):
        raise HitPawConfigurationError(
            "host (base URL)",
            f"plain http to {parts.hostname} would send the API key in clear text; use https, or set "
            '"allow_insecure_http": true in the connection extra if that network is trusted',
        )


def is_loopback_host(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url_from_host(host: str | None, port: int | None = None) -> str:
    """Turn the connection's host field into the base URL of the API.

    Empty means HitPaw's own service; a full URL (``http://127.0.0.1:8090``) is used as given; a bare host
    name gets https, because the key travels in a header and must not cross a network in clear text.
    """
    host = (host or "").strip()
    if not host:
        return DEFAULT_BASE_URL
    if "://" in host:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https"):
            raise HitPawConfigurationError(
                "host (base URL)", f"the scheme must be http or https, not {parts.scheme!r}"
            )
        if not parts.hostname:
            raise HitPawConfigurationError("host (base URL)", "the base URL has no host name")
        base = host.rstrip("/")
    else:
        if "/" in host or " " in host:
            raise HitPawConfigurationError(
                "host (base URL)",
                "give a bare host name (api-base.hitpaw.com) or a full URL with its scheme (https://...)",
            )
        base = f"https://{host}"
    parts = urlsplit(base)
    try:
        url_port = parts.port
    except ValueError:
        raise HitPawConfigurationError("host (base URL)", f"the port in {base!r} is not a number") from None
    if port and url_port is None:
        base = parts._replace(netloc=f"{parts.netloc}:{port}").geturl()
    return base
