"""The command line: ``python -m airflow_provider_hitpaw.emulator`` / ``hitpaw-emulator``."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_provider_hitpaw.emulator.__main__ import build_parser, main

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def cli() -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_hitpaw.emulator",
            "--port",
            "0",
            "--api-key",
            "very-secret-key-123",
            "--job-seconds",
            "0.1",
            "--coins",
            "40",
            "--fault",
            "500:first_n=1,paths=/api/task-status",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("HitPaw emulator listening on http://127.0.0.1:"), line
        yield proc, line.rsplit(" ", 1)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)  # also closes the pipes


def test_cli_serves_and_stops_on_sigterm(cli: tuple[subprocess.Popen[str], str]) -> None:
    proc, base = cli
    assert not base.endswith(":0")
    headers = {"Apikey": "very-secret-key-123"}
    assert (
        requests.post(base + "/api/task-status", json={"job_id": "x"}, headers=headers, timeout=5).status_code
        == 500
    )
    assert (
        requests.post(base + "/api/task-status", json={"job_id": "x"}, headers=headers, timeout=5).status_code
        == 400
    )
    state = requests.get(base + "/_emulator/state", timeout=5).json()
    assert state["coins"] == 40
    assert state["config"]["job_seconds"] == 0.1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=5) == 0
    assert proc.stderr is not None
    logs = proc.stderr.read()
    assert "POST /api/task-status" in logs
    assert "very-secret-key-123" not in logs


def test_cli_stops_on_sigint(cli: tuple[subprocess.Popen[str], str]) -> None:
    proc, _ = cli
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=5) == 0


def test_cli_help_documents_faults() -> None:
    text = build_parser().format_help()
    for word in ("--fault", "first_n", "share", "retry_after", "after_commit", "503_html", "--public-url"):
        assert word in text


def test_cli_rejects_a_bad_fault(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--fault", "teapot"])
    assert exc.value.code == 2
    assert "unknown fault kind" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "hitpaw-emulator"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30, check=True)
    assert "HitPaw" in out.stdout
