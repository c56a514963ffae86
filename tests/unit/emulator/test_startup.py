"""The start-up line: written by the CLI, read by every script that starts the emulator."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_provider_hitpaw.emulator.control import new_control_token
from airflow_provider_hitpaw.emulator.startup import StartupLine, format_startup_line, parse_startup_line


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8090", "https://127.0.0.1:1", "http://[::1]:8090"])
def test_round_trip(base_url: str) -> None:
    token = new_control_token()
    line = format_startup_line(base_url, token)
    assert line == f"HitPaw emulator listening on {base_url} (control token: {token})"
    assert parse_startup_line(line) == StartupLine(base_url, token)
    assert parse_startup_line(line + "\n") == (base_url, token)
    parsed = parse_startup_line(line)
    assert (parsed.base_url, parsed.control_token) == (base_url, token)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "HitPaw emulator listening on http://127.0.0.1:8090",  # the old line, without a token
        "HitPaw emulator listening on http://127.0.0.1:8090 (control token: )",
        "HitPaw emulator listening on http://127.0.0.1:8090/ (control token: abcdefghijklmnop)",
        "HitPaw emulator listening on ftp://127.0.0.1:8090 (control token: abcdefghijklmnop)",
        "HitPaw emulator listening on http://127.0.0.1:8090 (control token: abc def)",
        "Traceback (most recent call last):",
    ],
)
def test_other_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError, match="start-up line"):
        parse_startup_line(line)


def test_reading_the_line_imports_nothing_heavy() -> None:
    """Scripts that start the emulator import the parser in their own process: it must stay light."""
    code = (
        "import sys, airflow_provider_hitpaw.emulator.startup\n"
        "heavy = [m for m in ('aiohttp', 'PIL', 'numpy', 'airflow', 'requests') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"
