"""The emulator's optional TLS listener: ``EmulatorServer(ssl_context=...)`` and ``--tls-cert/--tls-key``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_hitpaw.emulator.__main__ import main
from airflow_provider_hitpaw.emulator.server import EmulatorServer
from airflow_provider_hitpaw.emulator.startup import parse_startup_line
from tests.conftest import TLSFiles, make_tls_files


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def test_server_serves_https_with_a_context(tls_files: TLSFiles) -> None:
    with EmulatorServer(job_seconds=0.05, ssl_context=tls_files.server_context()) as emu:
        assert emu.base_url.startswith("https://127.0.0.1:")
        answer = requests.post(
            emu.url("/api/image-segmentation"),
            json={"file_url": emu.sample_url("shoe.jpg")},
            headers={"Apikey": emu.api_key},
            verify=tls_files.ca_cert,
            timeout=10,
        )
        assert answer.json()["code"] == 200
        # The job fetches its https sample URL through the private plain listener: it completes.
        job_id = answer.json()["data"]["job_id"]
        for _ in range(100):
            status = requests.post(
                emu.url("/api/task-status"),
                json={"job_id": job_id},
                headers={"Apikey": emu.api_key},
                verify=tls_files.ca_cert,
                timeout=10,
            ).json()["data"]
            if status["status"] != "CONVERTING":
                break
            time.sleep(0.02)
        assert status["status"] == "COMPLETED"
        assert status["res_url"].startswith(emu.base_url)
        # Plain http on the TLS port gets no answer.
        with pytest.raises(requests.ConnectionError):
            requests.get(emu.base_url.replace("https://", "http://") + "/samples/", timeout=5)


def test_server_refuses_clients_that_do_not_trust_its_ca(tls_files: TLSFiles) -> None:
    with (
        EmulatorServer(ssl_context=tls_files.server_context()) as emu,
        pytest.raises(requests.exceptions.SSLError),
    ):
        requests.get(emu.url("/samples/"), timeout=5, verify=True)


def test_without_a_context_the_server_stays_plain_http() -> None:
    with EmulatorServer() as emu:
        assert emu.base_url.startswith("http://127.0.0.1:")
        assert requests.get(emu.url("/samples/"), timeout=5).status_code == 200


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
        proc.communicate(timeout=10)
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
