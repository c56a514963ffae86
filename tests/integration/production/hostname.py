"""``[core] hostname_callable`` for the production shape: each component says which one it is (two
triggerers on one machine would otherwise share a host name, and the test could not tell them apart)."""

from __future__ import annotations

import os
import socket


def from_env() -> str:
    return os.environ.get("HITPAW_TEST_HOSTNAME") or socket.getfqdn()
