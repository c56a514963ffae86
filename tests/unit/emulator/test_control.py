"""The control endpoint ``/_emulator/*`` over HTTP."""

from __future__ import annotations

import json
import socket
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_hitpaw.emulator.control import (
    TOKEN_HEADER,
    check_control_token,
    is_loopback_host_header,
)
from airflow_provider_hitpaw.emulator.server import EmulatorServer
from tests.unit.emulator.client import (
    STATUS,
    assert_error,
    control,
    post,
    refused,
    status,
    submit,
    wait_done,
)

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


def test_no_access_key_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    ctl = control(hitpaw_emulator, "POST", "/_emulator/keys", json={"key": "k2", "state": "no_access"})
    assert ctl.status_code == 200
    response = post(hitpaw_emulator, "/api/image-segmentation", {"file_url": "http://x/y.jpg"}, key="k2")
    assert_error(response, 400, 100400000, "No access")
    bad = control(hitpaw_emulator, "POST", "/_emulator/keys", json={"key": "k", "state": "?"})
    assert bad.status_code == 400


def test_expire_one_job_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    keep = submit(hitpaw_emulator, hitpaw_emulator.sample_url("broken.jpg"))
    gone = submit(hitpaw_emulator, hitpaw_emulator.sample_url("broken.jpg"))
    response = control(hitpaw_emulator, "POST", f"/_emulator/jobs/{gone}/expire")
    assert response.status_code == 200
    assert control(hitpaw_emulator, "POST", "/_emulator/jobs/nope/expire").status_code == 404
    assert_error(post(hitpaw_emulator, "/api/task-status", {"job_id": gone}), 400, 100400002, "Bad Request")
    assert status(hitpaw_emulator, keep)["job_id"] == keep


def test_finish_one_job_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.configure(job_seconds=3600)
    held = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    ended = submit(hitpaw_emulator, hitpaw_emulator.sample_url("mug.jpg"))
    assert control(hitpaw_emulator, "POST", f"/_emulator/jobs/{ended}/finish").status_code == 200
    assert control(hitpaw_emulator, "POST", "/_emulator/jobs/nope/finish").status_code == 404
    assert wait_done(hitpaw_emulator, ended)["status"] == "COMPLETED"
    assert status(hitpaw_emulator, held)["status"] == "CONVERTING"
    # Through the handle too; a job already over keeps the time it ended.
    finished_at = hitpaw_emulator.state()["jobs"][1]["finished_at"]
    assert hitpaw_emulator.finish_job(ended)
    assert hitpaw_emulator.state()["jobs"][1]["finished_at"] == finished_at
    assert hitpaw_emulator.finish_job(held)
    assert wait_done(hitpaw_emulator, held)["status"] == "COMPLETED"
    assert not hitpaw_emulator.finish_job("nope")


def test_faults_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    ctl = "/_emulator/faults"
    response = control(hitpaw_emulator, "POST", ctl, json=[{"kind": "500", "first_n": 1}, "429:share=0.5"])
    assert response.status_code == 200
    assert [r["kind"] for r in response.json()["rules"]] == ["500", "429"]
    assert control(hitpaw_emulator, "GET", ctl).json()["rules"][0]["kind"] == "500"
    assert control(hitpaw_emulator, "POST", ctl, json=[{"kind": "teapot"}]).status_code == 400
    json_type = {"Content-Type": "application/json"}
    assert control(hitpaw_emulator, "POST", ctl, data=b"{", headers=json_type).status_code == 400
    assert control(hitpaw_emulator, "POST", ctl, json={"rules": ["500"], "seed": 3}).status_code == 200
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code == 500
    # control requests are never faulted
    assert control(hitpaw_emulator, "GET", "/_emulator/state").status_code == 200
    assert control(hitpaw_emulator, "DELETE", ctl).json() == {"rules": []}
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code == 400


def test_config_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    ctl = "/_emulator/config"
    response = control(hitpaw_emulator, "POST", ctl, json={"coins": 30, "job_seconds": 0.1, "result_ttl": 60})
    assert response.status_code == 200
    assert response.json()["coins"] == 30
    assert control(hitpaw_emulator, "POST", ctl, json={"colour": 1}).status_code == 400
    assert control(hitpaw_emulator, "POST", ctl, json={"coins": -1}).status_code == 400
    assert control(hitpaw_emulator, "POST", "/_emulator/reset").status_code == 200
    assert hitpaw_emulator.state()["coins"] == 100_000


def test_down_through_the_control_endpoint_and_reset_brings_it_back(
    hitpaw_emulator: HitPawEmulatorHandle,
) -> None:
    response = control(hitpaw_emulator, "POST", "/_emulator/down", json={"seconds": 30})
    assert response.json() == {"down_for": 30}
    assert refused(hitpaw_emulator.server.port)
    hitpaw_emulator.reset()
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code == 400


# --- who may use it: only a local program that knows this run's token


def _attacks(job_id: str) -> list[tuple[str, str, Any]]:
    """One request per control operation; each would change something (or show the jobs) if accepted."""
    return [
        ("GET", "/_emulator/state", None),
        ("GET", "/_emulator/faults", None),
        ("POST", "/_emulator/faults", ["500"]),
        ("DELETE", "/_emulator/faults", None),
        ("POST", "/_emulator/keys", {"key": "evil-key-000", "state": "valid"}),
        ("POST", "/_emulator/config", {"coins": 1_000_000, "job_seconds": 0}),
        ("POST", "/_emulator/down", {"seconds": 30}),
        ("POST", "/_emulator/reset", None),
        ("POST", f"/_emulator/jobs/{job_id}/expire", None),
        ("POST", f"/_emulator/jobs/{job_id}/fail", None),
        ("POST", f"/_emulator/jobs/{job_id}/finish", None),
        ("GET", "/_emulator/no-such-thing", None),
    ]


def _fingerprint(emu: HitPawEmulatorHandle) -> tuple[Any, ...]:
    state = emu.state()
    jobs = [(job["job_id"], job["status"]) for job in state["jobs"]]
    return state["coins"], jobs, state["faults"], state["listening"], state["config"]


@pytest.fixture
def busy_emulator(hitpaw_emulator: HitPawEmulatorHandle) -> tuple[HitPawEmulatorHandle, str]:
    """An emulator with something to lose: spent coins, a completed job, a fault rule."""
    job_id = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    assert wait_done(hitpaw_emulator, job_id)["status"] == "COMPLETED"
    hitpaw_emulator.set_faults(["500:paths=/api/oss/presign-put"])
    return hitpaw_emulator, job_id


def _refused_without_a_trace(
    emu: HitPawEmulatorHandle, job_id: str, headers: dict[str, str], expected: int, *, with_body: bool = False
) -> None:
    before = _fingerprint(emu)
    for method, path, body in _attacks(job_id):
        if with_body and body is None:
            continue
        data = None if body is None else json.dumps(body).encode()
        answer = requests.request(method, emu.url(path), data=data, headers=headers, timeout=5)
        assert answer.status_code == expected, (method, path, answer.text)
        assert set(answer.json()) == {"error"}
        assert job_id not in answer.text
        assert emu.control_token not in answer.text
        assert "Access-Control-Allow-Origin" not in answer.headers
    time.sleep(0.05)
    assert _fingerprint(emu) == before
    assert not refused(emu.server.port)
    # the key was not registered
    assert_error(
        post(emu, STATUS, {"job_id": "x"}, key="evil-key-000"), 400, 110400000, "api_key is not valid"
    )


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-token"),
        pytest.param({TOKEN_HEADER: ""}, id="empty-token"),
        pytest.param({TOKEN_HEADER: "x" * 43}, id="wrong-token"),
        pytest.param({"X-Emulator-Token-Other": "x"}, id="other-header"),
    ],
)
def test_requests_without_the_token_are_refused_and_change_nothing(
    busy_emulator: tuple[HitPawEmulatorHandle, str], headers: dict[str, str]
) -> None:
    emu, job_id = busy_emulator
    _refused_without_a_trace(emu, job_id, {"Content-Type": "application/json", **headers}, 403)


def test_a_token_of_another_run_is_refused(busy_emulator: tuple[HitPawEmulatorHandle, str]) -> None:
    emu, job_id = busy_emulator
    with EmulatorServer() as other:
        assert other.control_token != emu.control_token
        headers = {"Content-Type": "application/json", **other.control_headers()}
    _refused_without_a_trace(emu, job_id, headers, 403)


@pytest.mark.parametrize(
    "host",
    [
        "attacker.example",
        "attacker.example:{port}",
        "127.0.0.1.attacker.example:{port}",
        "localhost.attacker.example",
        "192.168.1.10:{port}",
        "0.0.0.0:{port}",
        "[::2]:{port}",
        "127.0.0.1:{port}@attacker.example",
    ],
)
def test_a_foreign_host_header_is_refused_even_with_the_token(
    busy_emulator: tuple[HitPawEmulatorHandle, str], host: str
) -> None:
    """DNS rebinding: a page of attacker.example reaches 127.0.0.1, but it sends Host: attacker.example."""
    emu, job_id = busy_emulator
    headers = {"Content-Type": "application/json", "Host": host.format(port=emu.server.port)}
    _refused_without_a_trace(emu, job_id, {**headers, **emu.control_headers()}, 403)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_a_body_that_is_not_declared_json_is_refused_even_with_the_token(
    busy_emulator: tuple[HitPawEmulatorHandle, str], content_type: str | None
) -> None:
    """The content types a browser may send cross-origin without a preflight, and none at all."""
    emu, job_id = busy_emulator
    headers = emu.control_headers() | ({"Content-Type": content_type} if content_type else {})
    _refused_without_a_trace(emu, job_id, headers, 415, with_body=True)


@pytest.mark.parametrize(
    "target",
    [
        "/_emulator/state",
        "//_emulator/state",
        "/./_emulator/state",
        "/x/../_emulator/state",
        "/%5Femulator/state",
        "/_emulator/state/",
        "/_emulator//state",
        "/_emulator%2Fstate",
        "/_emulator/state?token=x",
        "http://127.0.0.1/_emulator/state",
    ],
)
def test_no_spelling_of_a_control_path_reaches_a_handler_without_the_token(
    busy_emulator: tuple[HitPawEmulatorHandle, str], target: str
) -> None:
    emu, job_id = busy_emulator
    with socket.create_connection(("127.0.0.1", emu.server.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert status in (403, 404), answer
    assert job_id.encode() not in answer
    assert b"coins" not in answer


def test_a_cors_preflight_is_never_granted(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    preflight = requests.options(
        hitpaw_emulator.url("/_emulator/config"),
        headers={
            "Origin": "http://attacker.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, x-emulator-token",
        },
        timeout=5,
    )
    assert preflight.status_code == 403
    assert not any(name.lower().startswith("access-control-") for name in preflight.headers)


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "127.8.9.10", "[::1]:{port}"]
)
def test_loopback_host_headers_with_the_token_are_served(
    hitpaw_emulator: HitPawEmulatorHandle, host: str
) -> None:
    headers = {"Host": host.format(port=hitpaw_emulator.server.port)}
    assert control(hitpaw_emulator, "POST", "/_emulator/config", json={"coins": 7}, headers=headers).ok
    assert hitpaw_emulator.state()["coins"] == 7
    assert control(hitpaw_emulator, "GET", "/_emulator/no-such-thing").status_code == 404


def test_bodies_declared_json_with_a_charset_are_accepted(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    answer = control(hitpaw_emulator, "POST", "/_emulator/config", data=b'{"coins": 9}', headers=headers)
    assert answer.status_code == 200
    assert hitpaw_emulator.state()["coins"] == 9


def test_with_a_public_url_the_control_endpoint_still_wants_a_loopback_host() -> None:
    public = "http://emulator.example:9999"
    with EmulatorServer(public_url=public, api_key="k", control_token="given-token-0123456789") as emu:
        assert emu.control_token == "given-token-0123456789"
        assert emu.control_headers() == {"X-Emulator-Token": "given-token-0123456789"}
        foreign = {"Host": "emulator.example:9999"}
        api = requests.post(
            emu.url(STATUS), json={"job_id": "x"}, headers={**foreign, "Apikey": "k"}, timeout=5
        )
        assert api.json()["code"] == 100400002  # the API answers under the public name
        state = requests.get(
            emu.url("/_emulator/state"), headers={**foreign, **emu.control_headers()}, timeout=5
        )
        assert state.status_code == 403
        state = requests.get(emu.url("/_emulator/state"), headers=emu.control_headers(), timeout=5)
        assert state.json()["config"]["base_url"] == public


def test_the_in_process_helpers_need_no_token(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.configure(coins=3)
    assert hitpaw_emulator.state()["coins"] == 3


def test_each_run_has_its_own_random_token_and_a_given_one_is_checked() -> None:
    first, second = EmulatorServer(), EmulatorServer()
    assert first.control_token != second.control_token
    assert len(first.control_token) >= 32
    for bad in ("short", "has space in it 0123", "x" * 257, 'quote"0123456789abcdef', ""):
        with pytest.raises(ValueError, match="control token"):
            EmulatorServer(control_token=bad)


@pytest.mark.parametrize(
    ("value", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.1:8090", True),
        ("127.255.0.3:1", True),
        ("localhost", True),
        ("LocalHost:80", True),
        ("[::1]", True),
        ("[::1]:8090", True),
        ("::1", False),  # not a valid Host header: IPv6 goes in brackets
        ("", False),
        (None, False),
        ("localhost.", False),
        ("localhost:port", False),
        ("127.0.0.1:8090:1", False),
        ("127.0.0.1 ", False),
        ("10.0.0.1", False),
        ("[::1", False),
        ("example.com", False),
    ],
)
def test_loopback_host_header(value: str | None, loopback: bool) -> None:
    assert is_loopback_host_header(value) is loopback


def test_check_control_token() -> None:
    assert check_control_token("A-z_0.9~" * 2) == "A-z_0.9~" * 2
    with pytest.raises(ValueError, match="16 to 256"):
        check_control_token("a" * 15)
