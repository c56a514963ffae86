"""Which network addresses the provider connects to on the word of a remote answer.

HitPaw's answers name URLs (result links, pre-signed upload targets) that the worker then fetches or
writes to. Whatever answers at the base URL may be hostile (a compromised proxy, a typo'd host), so a named
URL may only lead to a public address, or to the same kind of address the base URL itself has: a base URL
on 127.0.0.1 (the local emulator) may name loopback results, one on a private network private ones. A
link-local address (cloud metadata services live there) is never reached unless the base URL is one.

No I/O happens here: callers resolve names and pass the addresses in.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable


class AddressKind(StrEnum):
    """What kind of network an address belongs to, as far as trusting it goes."""

    PUBLIC = "public"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    #: Unspecified (0.0.0.0 reaches this machine), multicast, documentation, CGNAT and other special ranges.
    RESERVED = "reserved"


_PRIVATE_NETWORKS: Final = tuple(
    ipaddress.ip_network(network) for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def address_kind(address: str) -> AddressKind:
    """The kind of an IP address given as text (an IPv6 zone suffix is ignored).

    Raises ``ValueError`` for text that is not an IP address.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _LOCAL_NAT64 or ip in _SITE_LOCAL:
            return AddressKind.PRIVATE if ip in _SITE_LOCAL else AddressKind.RESERVED
        # ::ffff:127.0.0.1, ::127.0.0.1, ::ffff:0:127.0.0.1, 64:ff9b::7f00:1 and 2002:7f00:1:: all reach an
        # IPv4 address: judge what they reach.
        embedded = ip.ipv4_mapped or _embedded_ipv4(ip)
        if embedded is not None:
            ip = embedded
    if ip.is_unspecified or ip.is_multicast:
        return AddressKind.RESERVED
    if ip.is_loopback:
        return AddressKind.LOOPBACK
    if ip.is_link_local:
        return AddressKind.LINK_LOCAL
    if any(ip in network for network in _PRIVATE_NETWORKS if network.version == ip.version):
        return AddressKind.PRIVATE
    if ip.is_global:
        return AddressKind.PUBLIC
    return AddressKind.RESERVED


_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAT64: Final = ipaddress.ip_network("64:ff9b:1::/48")
_SITE_LOCAL: Final = ipaddress.ip_network("fec0::/10")
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")
_IPV4_TRANSLATED: Final = ipaddress.ip_network("::ffff:0:0:0/96")
_SIX_TO_FOUR: Final = ipaddress.ip_network("2002::/16")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 form carries: NAT64, IPv4-compatible, IPv4-translated, or 6to4."""
    if ip in _NAT64 or ip in _IPV4_TRANSLATED or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    return None


def _as_resolvers_read(host: str) -> str:
    """A host name as URL parsers map it before resolving it (IDNA's UTS 46 mapping): full-width digits,
    ideographic full stops and invisible characters become what they stand for, so that 127.0.0.1 spelt
    with full-width digits, or followed by an ideographic full stop, is judged as 127.0.0.1."""
    import idna  # requests' own dependency

    try:
        return str(idna.uts46_remap(host, std3_rules=False, transitional=False))
    except (idna.IDNAError, ValueError):
        return unicodedata.normalize("NFKC", host)


_NUMBER_LABEL: Final = re.compile(r"0x[0-9a-f]*|[0-9]+")


def legacy_ipv4(name: str) -> str | None:
    """The dotted quad that an IPv4 address in any of its historical spellings stands for (one to four
    parts, each decimal, octal with a leading 0, or hexadecimal with 0x; the last part fills the rest), as
    ``inet_aton`` reads it; None when the text is no such address."""
    labels = name.split(".")
    if not 1 <= len(labels) <= 4 or not all(_NUMBER_LABEL.fullmatch(label) for label in labels):
        return None
    values = []
    for label in labels:
        if label.startswith("0x"):
            values.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if not set(label) <= set("01234567"):
                return None
            values.append(int(label, 8))
        else:
            values.append(int(label))
    *head, last = values
    if any(value > 255 for value in head) or last >= 256 ** (4 - len(head)):
        return None
    number = sum(value << (8 * (3 - position)) for position, value in enumerate(head)) + last
    return str(ipaddress.IPv4Address(number))


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class AddressPolicy:
    """The kinds of address a URL named by a remote answer may lead to."""

    allowed: frozenset[AddressKind] = frozenset({AddressKind.PUBLIC})

    @classmethod
    def beside(cls, base_addresses: Iterable[str]) -> AddressPolicy:
        """Public addresses, plus the kinds the base URL's own addresses are of."""
        kinds = {AddressKind.PUBLIC}
        for address in base_addresses:
            try:
                kinds.add(address_kind(address))
            except ValueError:
                continue
        return cls(frozenset(kinds))

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        try:
            kind = address_kind(address)
        except ValueError:
            return f"{address!r} is not an IP address"
        if kind in self.allowed:
            return None
        return f"{address} is a {kind} address, and the HitPaw base URL is not"


#: Name suffixes that only resolve inside an organisation (RFC 6762, RFC 8375, and common practice).
_INTERNAL_SUFFIXES: Final = (
    ".local",
    ".localhost",
    ".localdomain",
    ".internal",
    ".intranet",
    ".lan",
    ".home",
    ".home.arpa",
    ".corp",
    ".private",
)


def internal_host_reason(host: str) -> str | None:
    """Why a public service such as HitPaw could not fetch from ``host``, judged from the name alone;
    None when the name may well be public.

    An IP literal is judged by its kind; a name by its form: a single label (``fileserver``) or an
    organisation-only suffix (``intranet.corp.local``). No name is resolved here.
    """
    if not isinstance(host, str):
        return "it has no host name"
    name = _as_resolvers_read(host).strip().rstrip(".").lower()
    if not name:
        return "it has no host name"
    if is_ip_literal(name):
        kind = address_kind(name)
        return None if kind is AddressKind.PUBLIC else f"{name} is a {kind} address"
    if _NUMBER_LABEL.fullmatch(name.rsplit(".", 1)[-1]):
        # A name ending in a number is an IPv4 address to every URL parser and resolver, in the legacy
        # forms too (127.1, 0x7f.1, 0177.0.0.1, 2130706433): judge the address it spells.
        address = legacy_ipv4(name)
        if address is None:
            return f"{name} ends in a number but is no IPv4 address"
        kind = address_kind(address)
        return None if kind is AddressKind.PUBLIC else f"{name} is {address}, a {kind} address"
    if name == "localhost":
        return "localhost is this machine"
    if "." not in name:
        return f"{name!r} is a single-label name, which only resolves inside a network"
    for suffix in _INTERNAL_SUFFIXES:
        if name.endswith(suffix):
            return f"names under {suffix} only resolve inside a network"
    return None
