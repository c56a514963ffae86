"""What counts as this machine: loopback host names and addresses."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a name or an address, without port or brackets) is ``localhost`` or a loopback IP."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
