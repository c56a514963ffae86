"""The error families of HitPaw's API, shared by both hooks, the trigger, the sensor and the operators.

Each family says one thing a caller must decide on: whether trying again can help (``retryable``). HitPaw's
own numeric code and message are kept so that a failed task shows what the service said; the API key is
never part of any of them (callers scrub it before building one from foreign text).

This module imports nothing from Airflow, so the protocol module and the tests can use it anywhere.
"""

from __future__ import annotations

import re
from typing import Final

#: The prefix ``str()`` of any error here starts with: ``HitPaw: `` or ``HitPaw (code 1, HTTP 400): ``. It
#: is found again where a message quotes another error, at the start or after a space or bracket.
_PREFIX: Final = re.compile(r"(?:^|(?<=[\s(\[]))HitPaw(?: \(((?:code -?\d+|HTTP \d+)(?:, HTTP \d+)?)\))?: ")


def _details(code: int | None, http_status: int | None) -> str:
    """HitPaw's code and the HTTP status as the prefix shows them (``code 1, HTTP 400``), or ""."""
    parts = []
    if code is not None:
        parts.append(f"code {code}")
    if http_status is not None:
        parts.append(f"HTTP {http_status}")
    return ", ".join(parts)


def _one_prefix(message: str, own_details: str) -> str:
    """``message`` without the prefixes of the errors it quotes: the outer error adds the one prefix.

    A quoted error's code and status stay, as ``(code 1, HTTP 400) its message``; a leading prefix equal to
    the error's own (an error rebuilt from its own text across a deferral) goes entirely.
    """

    def replace(match: re.Match[str]) -> str:
        details = match.group(1)
        if details is None or (match.start() == 0 and details == own_details):
            return ""
        return f"({details}) "

    return _PREFIX.sub(replace, message)


class HitPawError(Exception):
    """Anything that went wrong talking to HitPaw.

    :param message: HitPaw's message, or a description of the network or protocol fault.
    :param code: HitPaw's numeric ``code``; None for a network fault or a bare HTTP error.
    :param http_status: the HTTP status of the answer; None when there was no answer.
    """

    #: Whether the same request may succeed if sent again later.
    retryable: bool = False

    def __init__(self, message: str, *, code: int | None = None, http_status: int | None = None) -> None:
        # A message quoting another error (``f"...: {err}"``) would show "HitPaw:" twice; kept once here,
        # where every message is composed, rather than at each place that quotes one.
        message = _one_prefix(message, _details(code, http_status)) if isinstance(message, str) else message
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status

    def __str__(self) -> str:
        details = _details(self.code, self.http_status)
        where = f" ({details})" if details else ""
        return f"HitPaw{where}: {self.message}"

    @property
    def detail(self) -> str:
        """The error as another message quotes it: without the ``HitPaw`` prefix, its code kept."""
        details = _details(self.code, self.http_status)
        return f"({details}) {self.message}" if details else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling, which Airflow uses for some
        # exceptions crossing process boundaries.
        return (_rebuild, (type(self), self.message, self.code, self.http_status))


def _rebuild(cls: type[HitPawError], message: str, code: int | None, http_status: int | None) -> HitPawError:
    return cls(message, code=code, http_status=http_status)


#: What each of HitPaw's key codes means for the user (hitpaw-api.md, section 3).
_KEY_PROBLEMS: Final[dict[int | None, str]] = {
    110400000: "the key is not valid: put the right one in the connection's password",
    100401000: "the key has expired: renew it, then update the connection's password",
    100400000: "the key may not use this API: check the account's API access",
}


class HitPawAuthenticationError(HitPawError):
    """The key is wrong, expired, or may not use this API (100400000, 100401000, 110400000).

    HitPaw's own words ("Unauthorized") name neither the key nor where it came from: once a hook has said
    which connection's key was refused (:meth:`refused_key_of`), the error says so, and what to do.

    :param conn_id: the Airflow connection whose API key HitPaw refused; None before a hook said.
    :param nothing_spent: True when no job had been created in this try before the refusal.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        conn_id: str | None = None,
        nothing_spent: bool = False,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.conn_id = conn_id
        self.nothing_spent = nothing_spent

    def refused_key_of(self, conn_id: str, *, nothing_spent: bool) -> HitPawAuthenticationError:
        """Say which connection's key was refused, and whether no coin was spent; returns this error."""
        self.conn_id = conn_id
        self.nothing_spent = nothing_spent
        return self

    def __str__(self) -> str:
        if self.conn_id is None:
            return super().__str__()
        problem = _KEY_PROBLEMS.get(self.code, "check the key in the connection's password")
        text = (
            f"HitPaw refused the API key of the Airflow connection {self.conn_id!r} ({self.message}); "
            f"{problem}"
        )
        if self.nothing_spent:
            text += ". No job had been created in this try: no coin was spent"
        details = _details(self.code, self.http_status)
        return f"HitPaw ({details}): {text}" if details else f"HitPaw: {text}"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_authentication,
            (self.message, self.code, self.http_status, self.conn_id, self.nothing_spent),
        )


def _rebuild_authentication(
    message: str, code: int | None, http_status: int | None, conn_id: str | None, nothing_spent: bool
) -> HitPawAuthenticationError:
    return HitPawAuthenticationError(
        message, code=code, http_status=http_status, conn_id=conn_id, nothing_spent=nothing_spent
    )


class HitPawInsufficientCoinsError(HitPawError):
    """The account cannot pay for the job (110402000): retrying only burns time until it is topped up."""


class HitPawInvalidRequestError(HitPawError):
    """HitPaw refused this input (100400001 Invalid URL, 100400002 Bad Request): it fails again as it is."""


class HitPawRateLimitError(HitPawError):
    """Too many requests (HTTP 429, 100429000): back off and try again.

    :param retry_after: seconds the server asked us to wait (``Retry-After``), when it said.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_rate_limit, (self.message, self.code, self.http_status, self.retry_after))


def _rebuild_rate_limit(
    message: str, code: int | None, http_status: int | None, retry_after: float | None
) -> HitPawRateLimitError:
    return HitPawRateLimitError(message, code=code, http_status=http_status, retry_after=retry_after)


class HitPawServerError(HitPawError):
    """HitPaw failed on its side (100500000, HTTP 5xx): usually gone on the next try."""

    retryable = True


class HitPawConnectionError(HitPawError):
    """No usable answer arrived: refused, reset or timed-out connection.

    :param request_sent: False only when the connection failed before the request left (refused, or a
        connect time-out): then HitPaw certainly did nothing. Otherwise it may have acted on the request.
    """

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        http_status: int | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.request_sent = request_sent


class HitPawTLSError(HitPawConnectionError):
    """HitPaw's certificate could not be verified: a configuration problem (or an attack), never transient.

    Retrying would only repeat the refusal; set a CA bundle on the connection if the certificate is
    legitimately signed by a private authority.
    """

    retryable = False


class HitPawSubmissionUnknownError(HitPawError):
    """A submission whose answer was lost after HitPaw may have accepted (and charged for) it.

    HitPaw has no idempotency key and no way to list jobs, so the outcome cannot be found out. The hook
    resubmits such a request once (a lost answer is usually a dropped connection, not a created job) and
    then stops: more attempts could each charge again. A person should check the account before retrying.
    """


class HitPawResponseError(HitPawError):
    """An answer that does not follow HitPaw's documented envelope (not JSON, cut short, fields missing).

    Treated as transient: such answers come from proxies and half-written responses, not from a
    decision of the service about our request.
    """

    retryable = True


class HitPawUntrustedAnswerError(HitPawResponseError):
    """An answer this provider refuses to act on: a job id unfit for logs and file names, one job id for
    two images, a result link to an address the base URL has no business naming, a download over its size.

    Not retried: the same server would say the same, and acting on it could leak or overwrite data.
    """

    retryable = False


class HitPawInputsChangedError(HitPawError):
    """A deferred task resumed with other inputs than it submitted (a template that renders anew): nothing
    is kept, and a retry judges the inputs afresh, finding what was paid for in the ledger."""

    retryable = True


class HitPawStorageError(HitPawError):
    """The user's storage refused to keep a result (or to give an input): a full disk, a permission, a
    name it does not take. ``retryable`` says whether trying again can help (a full disk can clear up,
    a permission does not)."""

    retryable = True

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_storage, (self.message, self.retryable))


def _rebuild_storage(message: str, retryable: bool) -> HitPawStorageError:
    return HitPawStorageError(message, retryable=retryable)


class HitPawJobFailedError(HitPawError):
    """The job ended with status ``ERROR``: HitPaw could not process the image."""

    #: The job that failed, when known.
    job_id: str | None = None

    @classmethod
    def for_job(cls, job_id: str, image: str | None = None) -> HitPawJobFailedError:
        error = cls(cls.describe(job_id, image))
        error.job_id = job_id
        return error

    @staticmethod
    def describe(job_id: str, image: str | None = None) -> str:
        """What to tell a user whose job ended in ``ERROR``: which image, and what usually causes it."""
        which = f"job {job_id!r}" + (f" for {image}" if image else "")
        return (
            f"{which} ended with status ERROR: HitPaw could not segment the image. Usually HitPaw could not "
            "fetch it (a private or hot-link-protected host, an expired signed URL: upload it with "
            "source_path instead) or the file is not a readable JPEG, PNG or WebP image"
        )


class HitPawTimeoutError(HitPawError):
    """The job was still running when the caller's deadline passed."""


class HitPawBudgetError(HitPawError):
    """An image a batch did not submit because its ``max_coins`` budget would not cover it.

    Not an error of HitPaw's: nothing was sent, nothing charged. A retry of the same batch meets the same
    budget; raise ``max_coins`` or split the batch.
    """

    retryable = False


class HitPawConfigurationError(HitPawError, ValueError):
    """The connection or an argument is unusable; raised before anything is sent.

    :param field: the name of the argument or connection field at fault, so the message can say it.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field

    def __reduce__(self) -> tuple[object, ...]:
        field, _, problem = self.message.partition(": ")
        return (type(self), (field, problem))


def error_family(name: str | None) -> type[HitPawError] | None:
    """The error class of this module called ``name``: how an error crosses a trigger event by name."""
    family = globals().get(name or "")
    return family if isinstance(family, type) and issubclass(family, HitPawError) else None
