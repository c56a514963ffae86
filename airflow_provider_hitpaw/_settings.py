"""What a hook takes from an Airflow ``hitpaw`` connection, checked once when the connection is read.

These are the provider's own rules, not HitPaw's: how the host field becomes a base URL, when plain http
is allowed, how TLS is verified, and the limits put on what answers there. Both hooks read the connection
through :meth:`ConnectionSettings.from_connection_fields`, so a connection means the same to the worker
and to the triggerer. No I/O happens here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError

#: Bytes a kept result may have at most, unless the connection says otherwise (``max_download_bytes``).
DEFAULT_MAX_DOWNLOAD_BYTES: Final = 256 * 1024 * 1024
#: Seconds one file transfer (a result download, a source upload) may take in all, retries included.
DEFAULT_DOWNLOAD_TIMEOUT: Final = 600.0

#: A host as every URL parser reads it alike: a name or IPv4 address, or a bracketed IPv6 address, and an
#: optional port. Userinfo (``user@``), backslashes and percent-escapes are not: parsers disagree on them,
#: and the host one of them checks need not be the host another connects to.
_NETLOC: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
#: What an API key may contain: visible ASCII. White space or control characters in a header value break
#: the request (CR/LF) or surface the key in the error that says so.
_KEY: Final = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class ConnectionSettings:
    """The checked settings of one connection.

    ``verify`` is requests' and aiohttp's shared meaning: True, False, or the path of a CA bundle.
    """

    base_url: str
    api_key: str = field(repr=False)
    verify: bool | str = True
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT

    @property
    def base_host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @classmethod
    def from_connection_fields(
        cls, *, host: str | None, port: int | None, password: str | None, extra: dict[str, Any]
    ) -> ConnectionSettings:
        api_key = (password or "").strip()
        if not api_key:
            raise HitPawConfigurationError(
                "password (API key)", "the HitPaw connection has no API key; put it in the password field"
            )
        if not _KEY.fullmatch(api_key):
            # The key itself is never quoted: it is the one thing this message must not show.
            raise HitPawConfigurationError(
                "password (API key)",
                "the API key contains white space, control or non-ASCII characters; paste it again",
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
        else:
            verify = _verify_setting(extra.get("verify", True))
        return cls(
            base_url=base_url,
            api_key=api_key,
            verify=verify,
            max_download_bytes=_positive_int(
                extra.get("max_download_bytes", DEFAULT_MAX_DOWNLOAD_BYTES), "extra.max_download_bytes"
            ),
            download_timeout=_positive_seconds(
                extra.get("download_timeout", DEFAULT_DOWNLOAD_TIMEOUT), "extra.download_timeout"
            ),
        )


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HitPawConfigurationError(name, f"must be a whole number of bytes, at least 1, got {value!r}")
    return value


def _positive_seconds(value: Any, name: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise HitPawConfigurationError(name, f"must be a number of seconds greater than 0, got {value!r}")
    return float(value)


def _verify_setting(value: Any) -> bool | str:
    """``verify`` as requests means it: a boolean (also spelled as a string), or a CA bundle's path.

    Only an explicit false turns verification off; any other string is taken as a path, never as "off".
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        spelled = value.strip().lower()
        if spelled in ("false", "0", "no", "off"):
            return False
        if spelled in ("true", "1", "yes", "on", ""):
            return True
        return value.strip()
    return True


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
        return _api.DEFAULT_BASE_URL
    if "\\" in host:
        raise HitPawConfigurationError("host (base URL)", "must not contain a backslash")
    if "://" in host:
        parts = urlsplit(host)
        if parts.scheme not in ("http", "https"):
            raise HitPawConfigurationError(
                "host (base URL)", f"the scheme must be http or https, not {parts.scheme!r}"
            )
        base = host.rstrip("/")
    else:
        if "/" in host or " " in host:
            raise HitPawConfigurationError(
                "host (base URL)",
                "give a bare host name (api-base.hitpaw.com) or a full URL with its scheme (https://...)",
            )
        base = f"https://{host}"
    parts = urlsplit(base)
    if "@" in parts.netloc:
        raise HitPawConfigurationError(
            "host (base URL)",
            "must not carry a user name or password (user@host); the key goes in the password",
        )
    if not _NETLOC.fullmatch(parts.netloc):
        raise HitPawConfigurationError(
            "host (base URL)", f"{parts.netloc!r} is not a plain host name or address with an optional port"
        )
    if parts.query or parts.fragment:
        raise HitPawConfigurationError("host (base URL)", "must not have a query or a fragment")
    try:
        url_port = parts.port
    except ValueError:
        raise HitPawConfigurationError("host (base URL)", f"the port in {base!r} is not a number") from None
    if not parts.hostname:
        raise HitPawConfigurationError("host (base URL)", "the base URL has no host name")
    if port and url_port is None:
        base = parts._replace(netloc=f"{parts.netloc}:{port}").geturl()
    return base
