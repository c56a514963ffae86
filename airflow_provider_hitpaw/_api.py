"""What HitPaw's API says, written once: paths, payloads, answers, error codes and retry rules.

No I/O happens here. The synchronous hook (requests) and the asynchronous one (aiohttp) only move the
bytes this module describes, and hand back to it what came in; so the two can never disagree about what
an answer means, and every rule can be tested without a server.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

from airflow_provider_hitpaw._png import PNG_SIGNATURE
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawConnectionError,
    HitPawError,
    HitPawInsufficientCoinsError,
    HitPawInvalidRequestError,
    HitPawRateLimitError,
    HitPawResponseError,
    HitPawServerError,
    HitPawSubmissionUnknownError,
    HitPawUntrustedAnswerError,
    error_family,
)

DEFAULT_BASE_URL: Final = "https://api-base.hitpaw.com"
SUBMIT_PATH: Final = "/api/image-segmentation"
TASK_STATUS_PATH: Final = "/api/task-status"
API_KEY_HEADER: Final = "Apikey"

#: What one job costs in HitPaw's reference. Nothing is charged by it: a batch's coin budget reckons
#: with it only until HitPaw's first answer names the price.
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
    consume_coins: int | None
    #: Answers lost before this one, each sent again by the hook (HitPaw may have charged for each).
    resent: int = 0


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
    """The job a submission created.

    An answer with code 200 and a usable ``job_id`` is a job that HitPaw charged for, whatever else it
    says: an odd ``consume_coins`` (a string, a negative number, a bool) makes the cost unknown (None),
    never the job. Raising there would count as "may have landed" and pay for the image again.
    """
    data = parse_envelope(http_status, body, retry_after)
    job_id = _job_id(data, http_status)
    return SegmentationJob(job_id=job_id, consume_coins=_coins_or_unknown(data.get("consume_coins")))


#: A job's cost beyond this is no price but a broken answer (a job costs :data:`COINS_PER_JOB` today).
_MAX_PLAUSIBLE_COINS: Final = 10**9


def _coins_or_unknown(coins: Any) -> int | None:
    """The coins a job cost, or None where the answer does not say it plainly."""
    if isinstance(coins, bool) or not isinstance(coins, int | float):
        return None
    # Compared as they are: math.isfinite would overflow on an int too large for a float.
    if isinstance(coins, float) and (not math.isfinite(coins) or not coins.is_integer()):
        return None
    if not 0 <= coins <= _MAX_PLAUSIBLE_COINS:
        return None
    return int(coins)


#: What a job id may look like. HitPaw's are UUIDs; the pattern is wider but keeps ids safe to put in file
#: names, log lines and XCom: no white space, no control or escape characters, no path separators.
JOB_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


def is_usable_job_id(value: Any) -> bool:
    return isinstance(value, str) and JOB_ID_PATTERN.fullmatch(value) is not None


def _job_id(data: dict[str, Any], http_status: int) -> str:
    value = data.get("job_id")
    if value is None or value == "":
        raise HitPawResponseError("the answer has no 'job_id'", code=SUCCESS_CODE, http_status=http_status)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # a number is an odd spelling of an id, not a reason to pay again
    if not isinstance(value, str):
        raise HitPawUntrustedAnswerError(
            f"the answer's job_id is a {type(value).__name__}, not an id; if this answered a submission, "
            "HitPaw may have charged for it, and it is not sent again",
            code=SUCCESS_CODE,
            http_status=http_status,
        )
    if not is_usable_job_id(value):
        # Shown as repr and cut short: the id may carry line breaks or terminal escapes meant for a log.
        raise HitPawUntrustedAnswerError(
            f"the answer's job_id {value[:60]!r}{'...' if len(value) > 60 else ''} ({len(value)} "
            "characters) is not a usable job id; if this answered a submission, HitPaw may have charged "
            "for it, and it is not sent again",
            code=SUCCESS_CODE,
            http_status=http_status,
        )
    return value


#: A status HitPaw may send: a short word. Unknown words are not failures (see :class:`TaskStatus`), but
#: text that is not a word at all is a broken answer, not a status to log.
_STATUS_WORD: Final = re.compile(r"[A-Za-z][A-Za-z_]{0,31}")


def parse_task_status(
    http_status: int, body: bytes, retry_after: str | None = None, *, job_id: str | None = None
) -> TaskStatus:
    """The status of a job; ``job_id``, when given, is the job asked about, which the answer must name."""
    data = parse_envelope(http_status, body, retry_after)
    status = _required_str(data, "status", http_status)
    if not _STATUS_WORD.fullmatch(status):
        raise HitPawResponseError(
            f"the answer's status {status[:40]!r} is not a status word",
            code=SUCCESS_CODE,
            http_status=http_status,
        )
    answered = _job_id(data, http_status)
    if job_id is not None and answered != job_id:
        raise HitPawResponseError(
            f"asked for job {job_id!r}, the answer is about job {answered!r}",
            code=SUCCESS_CODE,
            http_status=http_status,
        )
    return TaskStatus(
        job_id=answered,
        status=status.upper(),
        res_url=_optional_str(data, "res_url"),
        mask_url=_optional_str(data, "mask_url"),
        original_url=_optional_str(data, "original_url"),
    )


def parse_envelope(
    http_status: int, body: bytes, retry_after: str | None = None, *, success_code: int = SUCCESS_CODE
) -> dict[str, Any]:
    """Return the ``data`` of a successful answer, or raise the error the answer stands for.

    The body's ``code`` is read first because HitPaw reports errors in it even under HTTP 200; the HTTP
    status decides only when the body says nothing usable.

    :param success_code: the ``code`` that means success: 200 for the segmentation API, 0 for the OSS
        upload API. Under any other success code, the body's error codes are plain HTTP statuses (the
        OSS API echoes them): they are mapped as HTTP statuses, not kept as HitPaw codes.
    """
    if 300 <= http_status < 400:
        # The hooks never follow redirects: the key would go along to wherever they point.
        raise HitPawConfigurationError(
            "host (base URL)",
            f"the API answered HTTP {http_status} (a redirect); set the connection's host to the final URL",
        )
    document = _decode_json(body)
    code = _code_of(document.get("code")) if isinstance(document, dict) else None
    if isinstance(document, dict) and code is not None:
        # The body's code is HitPaw's word, even against its HTTP status: a success body with its data
        # under a 5xx or 429 is a job created (and charged), not a fault to submit again.
        body_wins = success_code == SUCCESS_CODE and isinstance(document.get("data"), dict)
        if code == success_code and (200 <= http_status < 300 or (http_status >= 400 and body_wins)):
            data = document.get("data")
            if not isinstance(data, dict):
                raise HitPawResponseError(
                    "the answer has no 'data' object", code=code, http_status=http_status
                )
            return data
        message = server_text(document.get("message"))
        text = message or _default_message(code, http_status)
        if success_code != SUCCESS_CODE and not _is_documented_code(code):
            # An echoed HTTP status: it decides only where the answer's own status does not.
            status = http_status if http_status >= 400 or not 400 <= code < 600 else code
            raise error_for_code(None, status, text, retry_after=parse_retry_after(retry_after))
        raise error_for_code(code, http_status, text, retry_after=parse_retry_after(retry_after))
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


def _is_documented_code(code: int) -> bool:
    return any(code in codes for codes, _ in _CODE_FAMILIES)


def _family_for_http_status(http_status: int | None) -> type[HitPawError]:
    if http_status is None:
        return HitPawResponseError
    if http_status == 429:
        return HitPawRateLimitError
    # A gateway's "request timeout" and "too early" say nothing of the request itself: try it later.
    if http_status >= 500 or http_status in (408, 425):
        return HitPawServerError
    if http_status in (401, 403):
        return HitPawAuthenticationError
    if http_status == 402:
        return HitPawInsufficientCoinsError
    if http_status >= 400:
        return HitPawInvalidRequestError
    # A code HitPaw never documented, under a 2xx status: do not guess it away as transient.
    return HitPawError


#: How much of a server's own message is kept: enough for any real error, too little to flood a log or an
#: event.
SERVER_TEXT_LIMIT: Final = 300
_CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def server_text(value: Any) -> str:
    """A message the server wrote, fit to be logged: on one line (no control characters, so no forged
    log line or terminal escape), and at most :data:`SERVER_TEXT_LIMIT` characters; "" for no text."""
    if not isinstance(value, str):
        return ""
    text = _CONTROL_CHARACTERS.sub(" ", value).strip()
    return text if len(text) <= SERVER_TEXT_LIMIT else text[:SERVER_TEXT_LIMIT] + "..."


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


def _code_of(value: Any) -> int | None:
    """A ``code`` as an integer: also when sent as ``200.0`` or ``"200"`` (a sloppy proxy's JSON)."""
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _CODE_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    return None


#: A code sent as text: ASCII digits only (``str.isdigit`` also takes "²", which ``int`` refuses).
_CODE_TEXT: Final = re.compile(r"-?[0-9]{1,18}")


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
    #: A server's ``Retry-After`` is honoured up to this many seconds (beyond, it is likely a mistake).
    max_retry_after: float = 300.0
    #: How often a submission whose answer was lost is sent again (see :func:`submission_may_have_landed`).
    ambiguous_resubmits: int = 1
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
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


#: Every field name HitPaw's answers use (hitpaw-api.md): a name among them is the protocol's, never a
#: secret echoed back, whatever it spells.
FIELD_NAMES: Final = frozenset(
    {
        "code", "message", "data", "job_id", "consume_coins", "status", "res_url", "mask_url",
        "original_url", "upload_url", "access_url", "object_key", "content_type", "expire_at", "total",
        "success", "failed", "items", "error", "filename",
    }
)  # fmt: skip

#: What HitPaw answers a status query for a job it does not know (never was, or deleted after 8 days).
UNKNOWN_JOB_CODE: Final = 100400002


def says_job_unknown(error: HitPawError) -> bool:
    """Whether HitPaw itself said it does not know the job: only its own code proves it. A bare HTTP 404
    or 409 comes from whatever stands in front of it (a gateway, a deploy) and proves nothing, and paying
    again on it would pay twice for a job that lives."""
    return isinstance(error, HitPawInvalidRequestError) and error.code == UNKNOWN_JOB_CODE


def submission_may_have_landed(error: HitPawError) -> bool:
    """Whether a failed submission may nonetheless have created (and charged for) a job.

    A 429, an answer with HitPaw's own error code, or a connection that never opened prove that nothing
    was done. A connection lost after the request left, a gateway's bare 5xx, or a cut or garbled answer do
    not: HitPaw may have accepted the image before the answer was lost.
    """
    if isinstance(error, HitPawConnectionError):
        return error.request_sent
    if isinstance(error, HitPawServerError):
        return error.code is None or not _is_documented_code(error.code)
    return isinstance(error, HitPawResponseError)


def submission_ended_maybe_charged(error_type: str | None) -> bool:
    """Whether a submission that ended in the error named ``error_type`` may have been charged: the
    verdict on an answer lost after the request left (:func:`submission_may_have_landed`, sent again at
    most once), or an answer that could not be used. Named, so that it also judges an error carried
    across a deferral as a dict."""
    family = error_family(error_type)
    return family is not None and issubclass(family, HitPawSubmissionUnknownError | HitPawResponseError)


# --- Uploads: the OSS pre-signed PUT (hitpaw-api.md section 4) ------------------------------------------

PRESIGN_PATH: Final = "/api/oss/presign-put"
PRESIGN_BATCH_PATH: Final = "/api/oss/presign-put/batch"
#: The upload API's ``code`` for success (the segmentation API's is 200).
PRESIGN_SUCCESS_CODE: Final = 0
#: Files one batch call may pre-sign.
PRESIGN_BATCH_MAX: Final = 20
PRESIGN_EXPIRE_MIN: Final = 60
PRESIGN_EXPIRE_MAX: Final = 7200

#: The content type each input extension must be uploaded with. The upload API also takes gif and bmp,
#: but segmentation does not: an upload of those would only produce a job that fails.
UPLOAD_CONTENT_TYPES: Final[dict[str, str]] = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}

_JPEG_MAGIC: Final = b"\xff\xd8\xff"


def content_type_for(filename: str, field: str = "filename") -> str:
    """The content type to upload ``filename`` with, from its extension; raise for a format HitPaw's
    segmentation does not take."""
    if not isinstance(filename, str) or not filename.strip():
        raise HitPawConfigurationError(field, "has no file name")
    name = filename.strip().replace("\\", "/").rsplit("/", 1)[-1]
    dot = name.rfind(".")
    extension = name[dot:].lower() if dot > 0 else ""
    content_type = UPLOAD_CONTENT_TYPES.get(extension)
    if content_type is None:
        shown = repr(extension) if extension else "no extension"
        raise HitPawConfigurationError(
            field,
            f"{name!r} has {shown}; HitPaw segments {', '.join(sorted(UPLOAD_CONTENT_TYPES))} images",
        )
    return content_type


def sniff_image_type(head: bytes) -> str | None:
    """The content type the first bytes of a file show (JPEG, PNG or WebP), or None for anything else.

    12 bytes are enough for all three.
    """
    if head.startswith(_JPEG_MAGIC):
        return "image/jpeg"
    if head.startswith(PNG_SIGNATURE):
        return "image/png"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def presign_request(filename: str, content_type: str, expire_seconds: int | None = None) -> ApiRequest:
    """Ask for a pre-signed PUT URL for one file (``expire_seconds``: 60 to 7200, HitPaw's default 3600)."""
    body = _presign_file(filename, content_type)
    _add_expire_seconds(body, expire_seconds)
    return ApiRequest(PRESIGN_PATH, body)


def presign_batch_request(files: list[tuple[str, str]], expire_seconds: int | None = None) -> ApiRequest:
    """Ask for pre-signed PUT URLs for 1 to 20 files, each given as ``(filename, content_type)``."""
    if not isinstance(files, list | tuple) or not 1 <= len(files) <= PRESIGN_BATCH_MAX:
        count = len(files) if isinstance(files, list | tuple) else type(files).__name__
        raise HitPawConfigurationError(
            "files", f"one batch pre-signs 1 to {PRESIGN_BATCH_MAX} files, got {count}"
        )
    entries = [_presign_file(filename, content_type) for filename, content_type in files]
    body: dict[str, Any] = {"files": entries}
    _add_expire_seconds(body, expire_seconds)
    return ApiRequest(PRESIGN_BATCH_PATH, body)


def _presign_file(filename: str, content_type: str) -> dict[str, Any]:
    expected = content_type_for(filename)
    if not isinstance(content_type, str) or content_type.strip().lower() != expected:
        raise HitPawConfigurationError(
            "content_type", f"{filename!r} must be uploaded as {expected}, not {content_type!r}"
        )
    return {"filename": filename.strip(), "content_type": expected}


def _add_expire_seconds(body: dict[str, Any], expire_seconds: int | None) -> None:
    if expire_seconds is None:
        return
    if (
        isinstance(expire_seconds, bool)
        or not isinstance(expire_seconds, int)
        or not PRESIGN_EXPIRE_MIN <= expire_seconds <= PRESIGN_EXPIRE_MAX
    ):
        raise HitPawConfigurationError(
            "expire_seconds",
            f"must be a whole number of seconds from {PRESIGN_EXPIRE_MIN} to {PRESIGN_EXPIRE_MAX}, "
            f"got {expire_seconds!r}",
        )
    body["expire_seconds"] = expire_seconds


@dataclass(frozen=True)
class PresignedUpload:
    """Where to PUT one file, and the public URL it then has.

    ``upload_url`` is signed: it carries the permission to write, so it is left out of ``repr`` (and so
    out of logs); ``expire_at`` is a Unix time in seconds.
    """

    upload_url: str = field(repr=False)
    access_url: str
    object_key: str
    content_type: str
    expire_at: int


def parse_presign(http_status: int, body: bytes, retry_after: str | None = None) -> PresignedUpload:
    data = parse_envelope(http_status, body, retry_after, success_code=PRESIGN_SUCCESS_CODE)
    return _presigned_upload(data, http_status)


def parse_presign_batch(
    http_status: int, body: bytes, retry_after: str | None = None, *, expected: int | None = None
) -> list[PresignedUpload | HitPawError]:
    """One result per file of the batch, in order: its upload, or the error the service gave for it.

    A file the service refused (``{"filename": ..., "error": ...}``) is a
    :class:`HitPawInvalidRequestError` in its place; the call as a whole fails only when the answer does.

    :param expected: how many files were asked for; an answer with another number of items is broken.
    """
    data = parse_envelope(http_status, body, retry_after, success_code=PRESIGN_SUCCESS_CODE)
    items = data.get("items")
    if not isinstance(items, list):
        raise HitPawResponseError(
            "the answer has no 'items' list", code=PRESIGN_SUCCESS_CODE, http_status=http_status
        )
    if expected is not None and len(items) != expected:
        raise HitPawResponseError(
            f"the answer has {len(items)} items for {expected} files",
            code=PRESIGN_SUCCESS_CODE,
            http_status=http_status,
        )
    results: list[PresignedUpload | HitPawError] = []
    for item in items:
        if isinstance(item, dict) and "upload_url" not in item and item.get("error"):
            error = item["error"]
            name = item.get("filename")
            results.append(
                HitPawInvalidRequestError(
                    f"{name!r}: {error}" if isinstance(name, str) else str(error), http_status=http_status
                )
            )
            continue
        if not isinstance(item, dict):
            raise HitPawResponseError(
                f"an item of the answer is not an object: {item!r}"[:_QUOTE_LIMIT],
                code=PRESIGN_SUCCESS_CODE,
                http_status=http_status,
            )
        results.append(_presigned_upload(item, http_status))
    return results


def _presigned_upload(data: dict[str, Any], http_status: int) -> PresignedUpload:
    def text(name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise HitPawResponseError(
                f"the answer has no '{name}'", code=PRESIGN_SUCCESS_CODE, http_status=http_status
            )
        return value

    def url(name: str) -> str:
        value = text(name)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            # Quoted without its query: an upload URL's query is its signature.
            shown = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else "no scheme"
            raise HitPawResponseError(
                f"the answer's {name} is not an http(s) URL ({shown[:_QUOTE_LIMIT]})",
                code=PRESIGN_SUCCESS_CODE,
                http_status=http_status,
            )
        return value

    expire_at: Any = data.get("expire_at")
    if not _is_int(expire_at) and not (isinstance(expire_at, float) and expire_at.is_integer()):
        raise HitPawResponseError(
            f"the answer's expire_at is not a Unix time: {expire_at!r}"[:_QUOTE_LIMIT],
            code=PRESIGN_SUCCESS_CODE,
            http_status=http_status,
        )
    return PresignedUpload(
        upload_url=url("upload_url"),
        access_url=url("access_url"),
        object_key=text("object_key"),
        content_type=text("content_type"),
        expire_at=int(expire_at),
    )


def quote_body(body: bytes) -> str:
    """An answer's body as an error message may quote it: the start only, decoded leniently."""
    return _quote(body)


def url_without_query(url: str) -> str:
    """A URL as a log line or a message may show it: a signed URL's query is its credential, and a user
    name and password in it are credentials too, so both are dropped."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not a URL)"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else parts.path


#: Query parameters that make a URL signed: its query is then a credential, which HitPaw may re-encode.
_SIGNED_PARAMETER: Final = re.compile(
    r"(?i)(sig|signature|x-amz-signature|x-goog-signature|x-amz-security-token|[\w-]*token|[\w-]*key"
    r"|[\w-]*keyid|[\w-]*secret|[\w-]*credentials?|[\w-]*pass(word|wd)?|pwd|[\w-]*auth[\w-]*|session[\w-]*"
    r"|sid|code)"
)


def is_signed_query(query: str) -> bool:
    return any(
        _SIGNED_PARAMETER.fullmatch(unquote(item.partition("=")[0])) for item in query.split("&") if item
    )


def url_without_credentials(url: str) -> str:
    """A URL as XCom, events and records may carry it: no user name or password, no query that holds a
    credential (a signature, a token, a password, an Azure SAS), no fragment; a plain query such as
    ``?v=2`` stays: it names the image."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(not a URL)"
    if not parts.scheme or not parts.netloc:
        return url
    query = "" if is_signed_query(parts.query) else parts.query
    # A fragment never reaches the server, and may carry a token (``#access_token=...``): dropped.
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, query, ""))


def without_credentials(result: dict[str, Any]) -> dict[str, Any]:
    """A result with its ``file_url`` and HitPaw's echo of it (``original_url``) stripped of credentials."""
    cleaned = dict(result)
    for name in ("file_url", "original_url"):
        if isinstance(cleaned.get(name), str):
            cleaned[name] = url_without_credentials(cleaned[name])
    return cleaned
