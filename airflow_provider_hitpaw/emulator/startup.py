"""The line ``hitpaw-emulator`` prints on stdout once it accepts connections, and how to read it.

The line is ``HitPaw emulator listening on <base URL> (control token: <token>)``, for example
``HitPaw emulator listening on http://127.0.0.1:8090 (control token: 3q2-7w...)``: the base URL has no
trailing slash (``https://`` with TLS) and the token is what ``/_emulator/*`` requests must send in the
``X-Emulator-Token`` header. A script that starts the emulator reads one line and calls
:func:`parse_startup_line` rather than splitting it itself.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

STARTUP_PREFIX: Final = "HitPaw emulator listening on "
_LINE: Final = re.compile(
    r"HitPaw emulator listening on (?P<url>https?://[^\s/]+) \(control token: (?P<token>[A-Za-z0-9_.~-]+)\)"
)


class StartupLine(NamedTuple):
    """What the start-up line says: where the emulator listens, and its control token."""

    base_url: str
    control_token: str


def format_startup_line(base_url: str, control_token: str) -> str:
    """The start-up line, as :func:`parse_startup_line` reads it."""
    return f"{STARTUP_PREFIX}{base_url} (control token: {control_token})"


def parse_startup_line(line: str) -> StartupLine:
    """``(base_url, control_token)`` from the emulator's start-up line; ValueError for any other line."""
    match = _LINE.fullmatch(line.strip())
    if match is None:
        shown = line if len(line) <= 300 else line[:300] + "..."
        raise ValueError(f"not the HitPaw emulator's start-up line: {shown!r}")
    return StartupLine(match["url"], match["token"])
