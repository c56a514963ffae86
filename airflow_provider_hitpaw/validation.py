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

from airflow_provider_hitpaw.exceptions import HitPawConfigurationError

MAX_URL_LENGTH: Final = 2048
#: The input formats HitPaw's segmentation accepts.
SUPPORTED_EXTENSIONS: Final = frozenset({".jpg", ".jpeg", ".png", ".webp"})


def validate_file_url(file_url: Any, field: str = "file_url") -> str:
    """Return the URL, stripped, when HitPaw could fetch it; raise otherwise.

    The extension is checked only when the path has one: many image URLs (CDNs, signed links) have none,
    and HitPaw judges the bytes, not the name.
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
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise HitPawConfigurationError(
            field, f"must be an http:// or https:// URL that HitPaw can fetch, not {shown}"
        )
    if not hostname:
        raise HitPawConfigurationError(field, "has no host name")
    extension = posixpath.splitext(unquote(parts.path))[1].lower()
    if extension and extension not in SUPPORTED_EXTENSIONS:
        raise HitPawConfigurationError(
            field,
            f"has the extension {extension!r}; HitPaw segments {', '.join(sorted(SUPPORTED_EXTENSIONS))}",
        )
    return url


def validate_job_id(job_id: Any, field: str = "job_id") -> str:
    if not isinstance(job_id, str):
        raise HitPawConfigurationError(field, f"must be a string, got {type(job_id).__name__}")
    stripped: str = job_id.strip()
    if not stripped:
        raise HitPawConfigurationError(field, "is empty (did a template render to nothing?)")
    return stripped


def validate_positive_seconds(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HitPawConfigurationError(field, f"must be a number of seconds, got {type(value).__name__}")
    if not 0 < value < math.inf:
        raise HitPawConfigurationError(field, f"must be a finite number greater than 0, got {value}")
    return float(value)


#: What to do when a result file already exists: replace it, keep it (and not download), or fail.
OVERWRITE_POLICIES: Final = ("overwrite", "skip", "fail")


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


def validate_timeout(value: Any, field: str = "timeout") -> float:
    """A timeout may be 0 (check once, do not wait) but never negative."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise HitPawConfigurationError(field, f"must be a number of seconds, got {type(value).__name__}")
    if not 0 <= value < math.inf:  # also refuses NaN: a deadline that would never pass
        raise HitPawConfigurationError(field, f"must not be negative, got {value}")
    return float(value)
