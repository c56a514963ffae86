"""Which addresses a URL named by a remote answer may reach (_addresses.py), judged without I/O."""

from __future__ import annotations

import pytest

from airflow_provider_hitpaw._addresses import AddressKind, AddressPolicy, address_kind, internal_host_reason


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", AddressKind.PUBLIC),
        ("2001:4860:4860::8888", AddressKind.PUBLIC),
        ("127.0.0.1", AddressKind.LOOPBACK),
        ("127.8.9.10", AddressKind.LOOPBACK),
        ("::1", AddressKind.LOOPBACK),
        ("10.1.2.3", AddressKind.PRIVATE),
        ("172.16.0.1", AddressKind.PRIVATE),
        ("192.168.1.20", AddressKind.PRIVATE),
        ("fd00::1", AddressKind.PRIVATE),
        ("169.254.169.254", AddressKind.LINK_LOCAL),
        ("fe80::1%eth0", AddressKind.LINK_LOCAL),
        ("0.0.0.0", AddressKind.RESERVED),
        ("::", AddressKind.RESERVED),
        ("224.0.0.1", AddressKind.RESERVED),
        ("100.64.0.1", AddressKind.RESERVED),
        ("192.0.2.1", AddressKind.RESERVED),
        # IPv6 forms that reach an IPv4 address are judged by what they reach (some Python versions call
        # them global).
        ("::ffff:127.0.0.1", AddressKind.LOOPBACK),
        ("::127.0.0.1", AddressKind.LOOPBACK),
        ("::ffff:0:127.0.0.1", AddressKind.LOOPBACK),
        ("64:ff9b::7f00:1", AddressKind.LOOPBACK),
        ("2002:7f00:1::", AddressKind.LOOPBACK),
        ("2002:0a00:0001::1", AddressKind.PRIVATE),
        ("::ffff:169.254.169.254", AddressKind.LINK_LOCAL),
        ("64:ff9b:1::7f00:1", AddressKind.RESERVED),
        ("fec0::1", AddressKind.PRIVATE),
    ],
)
def test_address_kind(address: str, kind: AddressKind) -> None:
    assert address_kind(address) is kind


def test_a_policy_beside_a_loopback_base_allows_loopback_only_besides_public() -> None:
    policy = AddressPolicy.beside(["127.0.0.1"])
    assert policy.refusal("127.0.0.1") is None
    assert policy.refusal("8.8.8.8") is None
    assert "private" in str(policy.refusal("10.0.0.1"))
    assert "link-local" in str(policy.refusal("169.254.169.254"))


def test_a_public_base_vouches_for_public_addresses_only() -> None:
    policy = AddressPolicy.beside(["93.184.215.14"])
    for address in ("127.0.0.1", "10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1", "0.0.0.0"):
        assert policy.refusal(address) is not None, address
    assert policy.refusal("not an address") is not None


@pytest.mark.parametrize(
    ("host", "internal"),
    [
        ("cdn.example.com", False),
        ("93.184.215.14", False),
        ("192.168.1.20", True),
        ("localhost", True),
        ("fileserver", True),
        ("intranet.corp.local", True),
        ("nas.home.arpa", True),
        ("printer.lan.", True),
    ],
)
def test_internal_host_reason(host: str, internal: bool) -> None:
    assert (internal_host_reason(host) is not None) is internal
