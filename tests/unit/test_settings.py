"""How a connection is read: the base URL, the key, TLS and the limits (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_hitpaw._api import DEFAULT_BASE_URL
from airflow_provider_hitpaw._settings import ConnectionSettings, base_url_from_host
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError
from tests.conftest import SECRET_KEY

# --- base_url_from_host ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        pytest.param(None, None, DEFAULT_BASE_URL, id="none"),
        pytest.param("", None, DEFAULT_BASE_URL, id="empty"),
        pytest.param("   ", None, DEFAULT_BASE_URL, id="blank"),
        pytest.param("", 8443, DEFAULT_BASE_URL, id="empty-with-port"),
        pytest.param("http://127.0.0.1:8090", None, "http://127.0.0.1:8090", id="full-url"),
        pytest.param("http://127.0.0.1:8090/", None, "http://127.0.0.1:8090", id="trailing-slash"),
        pytest.param(
            " https://api.example.com/// ", None, "https://api.example.com", id="slashes-and-spaces"
        ),
        pytest.param(
            "https://proxy.example.com/hitpaw/", None, "https://proxy.example.com/hitpaw", id="with-path"
        ),
        pytest.param("HTTPS://api.example.com", None, "HTTPS://api.example.com", id="uppercase-scheme"),
        pytest.param("api-base.hitpaw.com", None, "https://api-base.hitpaw.com", id="bare-host"),
        pytest.param("localhost:8090", None, "https://localhost:8090", id="bare-host-with-port"),
        pytest.param("api.example.com", 8443, "https://api.example.com:8443", id="bare-host-port-field"),
        pytest.param("http://127.0.0.1", 8090, "http://127.0.0.1:8090", id="full-url-port-field"),
        pytest.param(
            "https://proxy.example.com/hitpaw",
            8443,
            "https://proxy.example.com:8443/hitpaw",
            id="path-port-field",
        ),
        pytest.param("http://127.0.0.1:8090", 9999, "http://127.0.0.1:8090", id="url-port-wins"),
    ],
)
def test_base_url_from_host(host: str | None, port: int | None, expected: str) -> None:
    assert base_url_from_host(host, port) == expected


@pytest.mark.parametrize(
    ("host", "port"),
    [
        pytest.param("ftp://files.example.com", None, id="ftp"),
        pytest.param("file:///etc/passwd", None, id="file"),
        pytest.param("ws://api.example.com", None, id="websocket"),
        pytest.param("http://", None, id="scheme-without-host"),
        pytest.param("https:///api", None, id="path-without-host"),
        pytest.param("api.example.com/api", None, id="path-without-scheme"),
        pytest.param("api.example.com/", None, id="slash-without-scheme"),
        pytest.param("api example.com", None, id="space"),
        pytest.param(
            "http://127.0.0.1:abc",
            8090,
            id="bad-port-with-port-field",
        ),
        pytest.param(
            "http://127.0.0.1:abc",
            None,
            id="bad-port",
        ),
    ],
)
def test_base_url_from_bad_host_names_the_field(host: str, port: int | None) -> None:
    with pytest.raises(HitPawConfigurationError) as info:
        base_url_from_host(host, port)
    assert info.value.field == "host (base URL)"
    assert "host" in str(info.value)


def test_base_url_error_says_the_scheme() -> None:
    with pytest.raises(HitPawConfigurationError, match="ftp"):
        base_url_from_host("ftp://files.example.com")


# --- ConnectionSettings ---------------------------------------------------------------------------


def settings_from(
    password: str | None = SECRET_KEY, host: str | None = None, port: int | None = None, **extra: Any
) -> ConnectionSettings:
    return ConnectionSettings.from_connection_fields(host=host, port=port, password=password, extra=extra)


def test_settings_from_connection_fields() -> None:
    settings = settings_from(host="http://127.0.0.1", port=8090)
    assert settings == ConnectionSettings(base_url="http://127.0.0.1:8090", api_key=SECRET_KEY, verify=True)


def test_settings_default_to_hitpaw_service() -> None:
    assert settings_from().base_url == DEFAULT_BASE_URL


def test_settings_strip_the_key() -> None:
    assert settings_from(password=f"  {SECRET_KEY}\n").api_key == SECRET_KEY


@pytest.mark.parametrize(
    "password", [pytest.param(None, id="none"), pytest.param("", id="empty"), pytest.param(" \t", id="blank")]
)
def test_settings_without_key_name_the_password_field(password: str | None) -> None:
    with pytest.raises(HitPawConfigurationError) as info:
        settings_from(password=password)
    assert info.value.field == "password (API key)"
    assert "password" in str(info.value)


def test_settings_bad_host_is_checked() -> None:
    with pytest.raises(HitPawConfigurationError) as info:
        settings_from(host="ftp://files.example.com")
    assert info.value.field == "host (base URL)"


@pytest.mark.parametrize(
    ("extra", "verify"),
    [
        pytest.param({}, True, id="default"),
        pytest.param({"ca_bundle": "/etc/ssl/hitpaw-ca.pem"}, "/etc/ssl/hitpaw-ca.pem", id="ca-bundle"),
        pytest.param({"ca_bundle": ""}, True, id="empty-ca-bundle"),
        pytest.param({"verify": False}, False, id="verify-false"),
        pytest.param({"ca_bundle": "/ca.pem", "verify": False}, "/ca.pem", id="ca-bundle-wins"),
    ],
)
def test_settings_verify(extra: dict[str, Any], verify: bool | str) -> None:
    assert settings_from(**extra).verify == verify


def test_settings_non_string_ca_bundle_names_the_field() -> None:
    with pytest.raises(HitPawConfigurationError) as info:
        settings_from(ca_bundle=["/ca.pem"])
    assert info.value.field == "extra.ca_bundle"


def test_settings_never_show_the_key() -> None:
    settings = settings_from(host="http://127.0.0.1:8090", ca_bundle="/ca.pem")
    assert settings.api_key == SECRET_KEY
    assert SECRET_KEY not in repr(settings)
    assert SECRET_KEY not in str(settings)
    assert "http://127.0.0.1:8090" in repr(settings)


# --- TLS: the key never crosses a network in clear text -----------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "http://127.0.0.1:8090",
        "http://127.8.9.10",
        "http://localhost:1",
        "http://[::1]:8090",
        "https://10.1.2.3",
    ],
    ids=["loopback", "loopback-range", "localhost", "ipv6-loopback", "https-anywhere"],
)
def test_http_to_loopback_and_https_anywhere_are_accepted(host: str) -> None:
    settings = ConnectionSettings.from_connection_fields(host=host, port=None, password="k", extra={})
    assert settings.base_url == host
    assert settings.verify is True


@pytest.mark.parametrize("host", ["http://10.1.2.3:8090", "http://api.example.com", "http://192.168.0.2"])
def test_plain_http_elsewhere_is_refused_naming_the_field(host: str) -> None:
    with pytest.raises(HitPawConfigurationError, match=r"host \(base URL\).*clear text") as raised:
        ConnectionSettings.from_connection_fields(host=host, port=None, password="k", extra={})
    assert raised.value.field == "host (base URL)"


@pytest.mark.parametrize("flag", [True, "true", "True", "1"])
def test_plain_http_elsewhere_when_explicitly_allowed(flag: object) -> None:
    settings = ConnectionSettings.from_connection_fields(
        host="http://10.1.2.3:8090", port=None, password="k", extra={"allow_insecure_http": flag}
    )
    assert settings.base_url == "http://10.1.2.3:8090"


@pytest.mark.parametrize("flag", [False, "false", "0", "no"])
def test_verification_can_be_turned_off_only_explicitly(flag: object) -> None:
    settings = ConnectionSettings.from_connection_fields(
        host=None, port=None, password="k", extra={"verify": flag}
    )
    assert settings.verify is False


# --- what the connection's host may look like -----------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("http://attacker.example\\@127.0.0.1:18901", id="backslash-userinfo"),
        pytest.param("http://attacker.example@127.0.0.1:18901", id="userinfo"),
        pytest.param("http://user:pass@127.0.0.1:8090", id="user-and-password"),
        pytest.param("http://127.0.0.1%2f@evil.example", id="percent-escape"),
        pytest.param("http://127.0.0.1:8090?x=1", id="query"),
        pytest.param("http://127.0.0.1:8090#frag", id="fragment"),
        pytest.param("http://exa mple.com", id="space"),
    ],
)
def test_a_host_that_parsers_read_differently_is_refused(host: str) -> None:
    """urlsplit sees 127.0.0.1 in ``attacker.example\\@127.0.0.1`` while requests connects to
    attacker.example, key and all: a host must be plain, so that every parser reads the same one."""
    with pytest.raises(HitPawConfigurationError) as raised:
        ConnectionSettings.from_connection_fields(host=host, port=None, password=SECRET_KEY, extra={})
    assert raised.value.field == "host (base URL)"
    assert SECRET_KEY not in str(raised.value)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("abc\r\nX-Injected: 1", id="crlf"),
        pytest.param("abc def", id="inner-space"),
        pytest.param("abc\tdef", id="tab"),
        pytest.param("abc\x00def", id="nul"),
        pytest.param("ключ-api", id="non-ascii"),
    ],
)
def test_a_key_with_white_space_or_control_characters_is_refused_unquoted(key: str) -> None:
    """Such a key breaks the request (CR/LF) and surfaces in the error that says so; it is refused when
    the connection is read, and the message never shows it, not even as repr."""
    with pytest.raises(HitPawConfigurationError) as raised:
        ConnectionSettings.from_connection_fields(host=None, port=None, password=key, extra={})
    assert raised.value.field == "password (API key)"
    assert key not in str(raised.value)
    assert repr(key)[1:-1] not in str(raised.value)
    assert "abc" not in str(raised.value)


def test_a_pasted_key_keeps_working_without_its_surrounding_white_space() -> None:
    settings = ConnectionSettings.from_connection_fields(
        host=None, port=None, password=f"  {SECRET_KEY}\n", extra={}
    )
    assert settings.api_key == SECRET_KEY


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, (256 * 1024 * 1024, 600.0)),
        ({"max_download_bytes": 1000, "download_timeout": 5}, (1000, 5.0)),
        ({"max_download_bytes": "2048", "download_timeout": "7.5"}, (2048, 7.5)),  # the 2.11 form's strings
    ],
)
def test_download_limits_come_from_the_connection(extra: dict[str, Any], expected: tuple[int, float]) -> None:
    settings = ConnectionSettings.from_connection_fields(host=None, port=None, password="k", extra=extra)
    assert (settings.max_download_bytes, settings.download_timeout) == expected


@pytest.mark.parametrize(
    "extra",
    [
        {"max_download_bytes": 0},
        {"max_download_bytes": -1},
        {"max_download_bytes": True},
        {"max_download_bytes": "lots"},
        {"download_timeout": 0},
        {"download_timeout": float("inf")},
        {"download_timeout": "soon"},
    ],
)
def test_bad_download_limits_name_their_field(extra: dict[str, Any]) -> None:
    with pytest.raises(HitPawConfigurationError) as raised:
        ConnectionSettings.from_connection_fields(host=None, port=None, password="k", extra=extra)
    assert raised.value.field == f"extra.{next(iter(extra))}"
