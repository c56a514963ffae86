"""The command line: ``python -m airflow_provider_hitpaw.emulator`` / ``hitpaw-emulator``, its TLS options
(``--tls-cert``/``--tls-key``) included."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_provider_hitpaw.emulator.__main__ import build_parser, main
from airflow_provider_hitpaw.emulator.startup import StartupLine, parse_startup_line
from tests.conftest import TLSFiles
from tests.unit.emulator.client import PATIENCE

if TYPE_CHECKING:
    from collections.abc import Iterator


def start_cli(*args: str) -> tuple[subprocess.Popen[str], StartupLine]:
    """The emulator as a user starts it, and what its start-up line says."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_hitpaw.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    try:
        assert re.fullmatch(
            r"HitPaw emulator listening on http://127\.0\.0\.1:\d+ \(control token: \S+\)", line
        ), line
        return proc, parse_startup_line(line)
    except BaseException:
        stop(proc)
        raise


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=PATIENCE)  # also closes the pipes


@pytest.fixture
def cli() -> Iterator[tuple[subprocess.Popen[str], StartupLine]]:
    proc, started = start_cli(
        "--api-key",
        "very-secret-key-123",
        "--job-seconds",
        "0.1",
        "--coins",
        "40",
        "--fault",
        "500:first_n=1,paths=/api/task-status",
    )
    try:
        yield proc, started
    finally:
        stop(proc)


def test_cli_serves_and_stops_on_sigterm(cli: tuple[subprocess.Popen[str], StartupLine]) -> None:
    proc, (base, token) = cli
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
    state = requests.get(base + "/_emulator/state", headers={"X-Emulator-Token": token}, timeout=5).json()
    assert state["coins"] == 40
    assert state["config"]["job_seconds"] == 0.1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=PATIENCE) == 0
    assert proc.stderr is not None
    logs = proc.stderr.read()
    assert "POST /api/task-status" in logs
    assert "very-secret-key-123" not in logs
    assert token not in logs


def test_cli_stops_on_sigint(cli: tuple[subprocess.Popen[str], StartupLine]) -> None:
    proc, _ = cli
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=PATIENCE) == 0


def test_cli_prints_a_random_token_that_opens_the_control_endpoint(
    cli: tuple[subprocess.Popen[str], StartupLine],
) -> None:
    _, (base, token) = cli
    assert len(token) >= 32
    assert requests.get(base + "/_emulator/state", timeout=5).status_code == 403
    wrong = {"X-Emulator-Token": token[:-1] + ("A" if token[-1] != "A" else "B")}
    assert (
        requests.post(base + "/_emulator/config", json={"coins": 1}, headers=wrong, timeout=5).status_code
        == 403
    )
    right = {"X-Emulator-Token": token}
    assert requests.get(base + "/_emulator/state", headers=right, timeout=5).json()["coins"] == 40
    assert requests.post(base + "/_emulator/config", json={"coins": 1}, headers=right, timeout=5).ok
    assert requests.get(base + "/_emulator/state", headers=right, timeout=5).json()["coins"] == 1


def test_cli_tokens_differ_per_run_and_can_be_given() -> None:
    proc, first = start_cli()
    stop(proc)
    proc, second = start_cli("--control-token", "given-token-0123456789")
    try:
        assert second.control_token == "given-token-0123456789"
        assert second.control_token != first.control_token
        headers = {"X-Emulator-Token": "given-token-0123456789"}
        assert requests.get(second.base_url + "/_emulator/state", headers=headers, timeout=5).ok
    finally:
        stop(proc)


def test_cli_takes_the_hostile_faults_in_text_form() -> None:
    proc, (base, _) = start_cli(
        "--api-key",
        "k-0123",
        "--fault",
        'odd_coins:value="20",first_n=1',
        "--fault",
        "png_then_html",
        "--fault",
        "redirect:location=http://127.0.0.1:1/x?a=1,paths=/samples/nope.jpg",
    )
    try:
        answer = requests.post(
            base + "/api/image-segmentation",
            json={"file_url": base + "/samples/shoe.jpg"},
            headers={"Apikey": "k-0123"},
            timeout=5,
        )
        assert answer.json()["data"]["consume_coins"] == "20"
        assert requests.get(base + "/results/x/cutout.png", timeout=5).content.startswith(
            b"\x89PNG\r\n\x1a\n<!"
        )
        moved = requests.get(base + "/samples/nope.jpg", allow_redirects=False, timeout=5)
        assert moved.headers["Location"] == "http://127.0.0.1:1/x?a=1"
    finally:
        stop(proc)


@pytest.mark.parametrize("token", ["short", "with space 0123456789", "paren)0123456789abc"])
def test_cli_rejects_a_bad_control_token(token: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--control-token", token])
    assert exc.value.code == 2
    assert "--control-token" in capsys.readouterr().err


def test_cli_help_documents_faults() -> None:
    text = build_parser().format_help()
    for word in (
        "--fault",
        "first_n",
        "share",
        "retry_after",
        "after_commit",
        "503_html",
        "--public-url",
        "--control-token",
        "X-Emulator-Token",
        "(control token: TOKEN)",
    ):
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


# --- TLS ------------------------------------------------------------------------------------------------


def test_cli_serves_https(tls_files: TLSFiles) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_hitpaw.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-cert",
            tls_files.server_cert,
            "--tls-key",
            tls_files.server_key,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("HitPaw emulator listening on https://127.0.0.1:"), line
        base_url, token = parse_startup_line(line)
        state = requests.get(
            f"{base_url}/_emulator/state",
            headers={"X-Emulator-Token": token},
            verify=tls_files.ca_cert,
            timeout=10,
        )
        assert json.loads(state.text)["config"]["base_url"] == base_url
    finally:
        proc.terminate()
        proc.communicate(timeout=PATIENCE)
    assert proc.returncode == 0


@pytest.mark.parametrize("given", ["cert", "key"])
def test_cli_wants_certificate_and_key_together(
    tls_files: TLSFiles, given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--tls-cert", tls_files.server_cert] if given == "cert" else ["--tls-key", tls_files.server_key]
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_cli_reports_an_unreadable_certificate(
    tmp_path: Path, tls_files: TLSFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", tls_files.server_key])
    assert raised.value.code == 2
    assert "--tls-cert/--tls-key" in capsys.readouterr().err
