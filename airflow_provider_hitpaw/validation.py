"""Checks on user input, made before any request is sent (and so before any coin is spent).

Every operator, sensor and trigger calls these, so one input is judged the same way everywhere. Each
failure is a :class:`HitPawConfigurationError` that names the field at fault.
"""

from __future__ import annotations

import math
import posixpath
from datetime import timedelta
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw._addresses import internal_host_reason
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError

MAX_URL_LENGTH: Final = 2048
#: The input formats HitPaw's segmentation accepts (what its upload takes them as, too).
SUPPORTED_EXTENSIONS: Final = frozenset(_api.UPLOAD_CONTENT_TYPES)
#: Extensions of image (and document) formats HitPaw's segmentation does not take. Only these refuse a
#: URL by its name: a path's last dot says nothing in ``/u/John.Smith`` or ``/products/v2.0``.
OTHER_IMAGE_EXTENSIONS: Final = frozenset(
    {
        ".gif",
        ".bmp",
        ".tif",
        ".tiff",
        ".svg",
        ".svgz",
        ".heic",
        ".heif",
        ".avif",
        ".ico",
        ".psd",
        ".raw",
        ".cr2",
        ".nef",
        ".dng",
        ".jxl",
        ".jp2",
        ".eps",
        ".pdf",
        ".apng",
    }
)
#: A job may stay CONVERTING for a long time, but HitPaw keeps a job for 8 days: no wait is longer.
MAX_TIMEOUT_SECONDS: Final = 8 * 24 * 3600.0
#: HitPaw recommends polling every 2 to 5 seconds; faster than once a second is never useful.
MIN_POLL_INTERVAL: Final = 1.0


def validate_file_url(file_url: Any, field: str = "file_url", *, allow_internal_hosts: bool = False) -> str:
    """Return the URL, stripped, when HitPaw could fetch it; raise otherwise.

    HitPaw fetches the image itself, from the internet: a URL on this machine, a private network or an
    intranet name would be paid for and then fail, so it is refused (``allow_internal_hosts`` lifts that
    when HitPaw's base URL is itself internal, as the local emulator is). The extension is checked only
    against formats HitPaw does not take: many image URLs (CDNs, signed links, ``render.php?img=``) have
    none or another, and HitPaw judges the bytes, not the name.
    """
    if not isinstance(file_url, str):
        raise HitPawConfigurationError(field, f"must be a string URL, got {type(file_url).__name__}")
    url = file_url.strip()
    if not url:
        raise HitPawConfigurationError(field, "is empty (did a template render to nothing?)")
    if len(url) > MAX_URL_LENGTH:
        raise HitPawConfigurationError(
            field, f"is {len(url)} characters long; HitPaw takes at most {MAX_URL_LENGTH}"
        )
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise HitPawConfigurationError(field, "contains white space or control characters")
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        _ = parts.port  # raises on a malformed port
    except ValueError as err:
        raise HitPawConfigurationError(field, f"is not a valid URL ({err})") from None
    if parts.scheme not in ("http", "https"):
        raise HitPawConfigurationError(field, _not_a_web_url(url, parts.scheme))
    if not hostname:
        raise HitPawConfigurationError(field, "has no host name")
    if "\\" in parts.netloc:
        # Python reads the host after it, a browser-like parser before it: which one HitPaw uses is unknown.
        raise HitPawConfigurationError(field, "has a backslash in its host part")
    if parts.port == 0:
        raise HitPawConfigurationError(field, "names port 0, which no server listens on")
    if not allow_internal_hosts:
        reason = internal_host_reason(hostname)
        if reason is not None:
            raise HitPawConfigurationError(
                field,
                f"HitPaw fetches images from the internet and could not reach {hostname} ({reason}); "
                "give the image as source_path instead, and it is uploaded to HitPaw first",
            )
    extension = posixpath.splitext(unquote(parts.path))[1].lower()
    if extension in OTHER_IMAGE_EXTENSIONS:
        raise HitPawConfigurationError(
            field,
            f"has the extension {extension!r}; HitPaw segments {', '.join(sorted(SUPPORTED_EXTENSIONS))}",
        )
    return url


def _not_a_web_url(url: str, scheme: str) -> str:
    if not scheme or len(scheme) == 1:  # /data/a.jpg, C:\a.jpg
        return (
            "is a local path, not a URL HitPaw can fetch; give it as source_path instead, and it is "
            "uploaded to HitPaw first"
        )
    return (
        f"is a {scheme}:// location, not an http(s) URL HitPaw can fetch; give it as source_path "
        "(with source_conn_id for its storage) instead, and it is uploaded to HitPaw first"
    )


def validate_job_id(job_id: Any, field: str = "job_id") -> str:
    """A job id as HitPaw gives them (see :data:`~airflow_provider_hitpaw._api.JOB_ID_PATTERN`)."""
    if not isinstance(job_id, str):
        raise HitPawConfigurationError(field, f"must be a string, got {type(job_id).__name__}")
    stripped: str = job_id.strip()
    if not stripped:
        raise HitPawConfigurationError(field, "is empty (did a template render to nothing?)")
    if not _api.is_usable_job_id(stripped):
        raise HitPawConfigurationError(
            field,
            f"{stripped[:60]!r} is not a HitPaw job id (letters, digits, '-', '_', '.', ':'; 128 at most)",
        )
    return stripped


def validate_positive_seconds(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HitPawConfigurationError(field, f"must be a number of seconds, got {type(value).__name__}")
    if not 0 < value < math.inf:
        raise HitPawConfigurationError(field, f"must be a finite number greater than 0, got {value}")
    return float(value)


#: What to do when a result file already exists: replace it, keep it (and not download), or fail.
OVERWRITE_POLICIES: Final = ("overwrite", "skip", "fail")


def validate_poll_interval(value: Any, field: str = "poll_interval") -> float:
    """Seconds between two polls of one job: at least :data:`MIN_POLL_INTERVAL`."""
    seconds = validate_positive_seconds(value, field)
    if seconds < MIN_POLL_INTERVAL:
        raise HitPawConfigurationError(
            field, f"must be at least {MIN_POLL_INTERVAL:g} s (HitPaw recommends 2 to 5), got {value}"
        )
    return seconds


#: A hold of the first event must end well before Airflow's backstop (60 s after the trigger's deadline).
MAX_EVENT_HOLD: Final = 50.0


def validate_event_hold(value: Any, field: str = "min_deferred_seconds") -> float | None:
    """Seconds a deferred task waits at least before its trigger fires: 0 to :data:`MAX_EVENT_HOLD`, or
    None for the provider's default."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_EVENT_HOLD:
        raise HitPawConfigurationError(
            field, f"must be a number of seconds from 0 to {MAX_EVENT_HOLD:g}, got {value!r}"
        )
    return float(value)


def validate_overwrite(value: Any, field: str = "overwrite") -> str:
    if value not in OVERWRITE_POLICIES:
        raise HitPawConfigurationError(
            field, f"must be one of {', '.join(OVERWRITE_POLICIES)}, got {value!r}"
        )
    return str(value)


def validate_positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise HitPawConfigurationError(field, f"must be a whole number, got {value!r}")
    if value < 1:
        raise HitPawConfigurationError(field, f"must be at least 1, got {value}")
    return value


def validate_failure_threshold(value: Any, field: str = "max_failed") -> int | float | None:
    """How many failures a batch tolerates: None (none), a whole count, or a fraction from 0 to under 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HitPawConfigurationError(field, f"must be a count or a fraction, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise HitPawConfigurationError(field, f"must not be negative, got {value}")
        return value
    if not 0 <= value < 1:
        raise HitPawConfigurationError(
            field, f"a fraction must be from 0 to under 1 (a count is a whole number), got {value}"
        )
    return value


def validate_timeout(value: Any, field: str = "timeout") -> float:
    """A wait of more than 0 seconds: with 0 (or less) the operators would pay for a job they can never
    wait for, and the sensor would give up after one look; refused when the DAG is parsed."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HitPawConfigurationError(field, f"must be a number of seconds, got {type(value).__name__}")
    if not 0 < value < math.inf:  # also refuses NaN: a deadline that would never pass
        raise HitPawConfigurationError(
            field, f"must be more than 0 seconds (HitPaw takes seconds to minutes per image), got {value}"
        )
    if value > MAX_TIMEOUT_SECONDS:
        raise HitPawConfigurationError(
            field,
            f"must be at most {MAX_TIMEOUT_SECONDS:g} s (8 days, as long as HitPaw keeps a job), got {value}",
        )
    return float(value)
