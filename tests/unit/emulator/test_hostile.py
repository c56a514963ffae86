"""The hostile fault kinds, as a client sees them over HTTP on 127.0.0.1, and the bounds that keep them cheap.

The clients here cap what they read: no test reads more than a few MB, however big the body.
"""

from __future__ import annotations

import gzip
import json
import socket
import struct
import time
import zlib
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_hitpaw.emulator import hostile
from airflow_provider_hitpaw.emulator.faults import REDIRECT_BODY_MARKER
from tests.unit.emulator.client import (
    PATIENCE,
    STATUS,
    SUBMIT,
    RecordedSleeps,
    control,
    post,
    submit,
    submit_body,
    wait_done,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle

PNG = b"\x89PNG\r\n\x1a\n"
MiB = 1024 * 1024


def envelope(code: int = 200) -> bytes:
    return b'{"code":%d,"message":"OK","data":{"job_id":"' % code


def read_at_most(response: requests.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a streamed body (as sent, not decoded)."""
    data = b""
    for chunk in response.raw.stream(256 * 1024, decode_content=False):
        data += chunk
        if len(data) >= limit:
            break
    return data


def eventually(check: Callable[[], bool], timeout: float = PATIENCE) -> None:
    """Until the emulator's streams are as ``check`` wants (a bound only a broken emulator reaches)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def streams(emu: HitPawEmulatorHandle) -> dict[str, int]:
    result: dict[str, int] = emu.state()["streams"]
    return result


def raw_request(emu: HitPawEmulatorHandle, path: str, body: bytes = b'{"job_id": "x"}') -> socket.socket:
    """A client that sends one request and then reads only what the test asks for."""
    sock = socket.create_connection(("127.0.0.1", emu.server.port), timeout=5)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nApikey: {emu.api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


# --- redirect


def test_redirect_on_results(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["redirect:location=http://127.0.0.1:1/latest/meta-data,paths=/results/*"])
    answer = requests.get(hitpaw_emulator.url("/results/abc/cutout.png"), allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    assert answer.headers["Location"] == "http://127.0.0.1:1/latest/meta-data"
    assert REDIRECT_BODY_MARKER in answer.text
    assert len(answer.content) < 1024
    assert hitpaw_emulator.state()["faults_served"] == {"redirect": 1}


def test_redirect_replaces_a_submission(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults([{"kind": "redirect", "location": "/elsewhere", "first_n": 1}])
    answer = requests.post(
        hitpaw_emulator.url(SUBMIT),
        json=submit_body(hitpaw_emulator),
        headers={"Apikey": hitpaw_emulator.api_key},
        allow_redirects=False,
        timeout=5,
    )
    assert (answer.status_code, answer.headers["Location"]) == (302, "/elsewhere")
    state = hitpaw_emulator.state()
    assert (state["coins"], state["jobs"]) == (100_000, [])


# --- endless


@pytest.mark.parametrize(
    ("path", "start", "fill", "content_type"),
    [
        (STATUS, envelope(), b"0", "application/json"),
        ("/api/oss/presign-put", envelope(0), b"0", "application/json"),
        ("/results/abc/cutout.png", PNG, b"\0", "image/png"),
    ],
)
def test_endless_is_cut_when_the_client_leaves(
    hitpaw_emulator: HitPawEmulatorHandle, path: str, start: bytes, fill: bytes, content_type: str
) -> None:
    hitpaw_emulator.set_faults([{"kind": "endless", "paths": [path]}])
    method = requests.get if path.startswith("/results/") else requests.post
    with method(hitpaw_emulator.url(path), stream=True, timeout=5) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == content_type
        assert "Content-Length" not in answer.headers
        assert answer.headers["Transfer-Encoding"] == "chunked"
        data = read_at_most(answer, 4 * MiB)
    assert data.startswith(start)
    assert set(data[len(start) :]) == set(fill)
    eventually(lambda: streams(hitpaw_emulator)["active"] == 0)
    sent = streams(hitpaw_emulator)
    assert sent["cut"] == 1
    assert sent["bytes_sent"] < 40 * MiB  # far from the 300 MiB it would have sent


def test_endless_of_a_given_size_ends_cleanly(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["endless:size_bytes=200000,paths=/results/*"])
    answer = requests.get(hitpaw_emulator.url("/results/abc/mask.png"), timeout=5)
    assert len(answer.content) == 200_000
    assert answer.content == PNG + bytes(200_000 - len(PNG))
    assert streams(hitpaw_emulator) == {"active": 0, "bytes_sent": 200_000, "cut": 0}


def test_a_client_that_stops_reading_stalls_the_stream_until_the_time_limit(
    hitpaw_emulator: HitPawEmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostile, "STREAM_TIME_LIMIT", 0.5)
    hitpaw_emulator.set_faults(["endless"])
    sock = raw_request(hitpaw_emulator, STATUS)
    try:
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
        # The client reads nothing more, and stays: backpressure stops the stream at what the socket
        # buffers hold, and only the time limit can end it (an endless stream never ends by itself).
        eventually(lambda: streams(hitpaw_emulator)["active"] == 0)
        assert streams(hitpaw_emulator)["cut"] == 1
        assert streams(hitpaw_emulator)["bytes_sent"] < 64 * MiB
    finally:
        sock.close()


# --- gzip_bomb


def test_gzip_bomb_on_results(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["gzip_bomb:paths=/results/*"])
    with requests.get(hitpaw_emulator.url("/results/abc/cutout.png"), stream=True, timeout=30) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Encoding"] == "gzip"
        assert answer.headers["Content-Type"] == "image/png"
        size = int(answer.headers["Content-Length"])
        assert 0.9 * MiB < size < 1.2 * MiB
        compressed = read_at_most(answer, 2 * MiB)
    assert len(compressed) == size
    inflated_size = struct.unpack("<I", compressed[-4:])[0]  # the gzip trailer says what it inflates to
    assert inflated_size == 1024 * MiB
    start = zlib.decompressobj(31).decompress(compressed, MiB)  # inflate the first MiB only
    assert start == PNG + bytes(MiB - len(PNG))


def test_gzip_bomb_on_the_api_inflates_to_json_padding(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults([{"kind": "gzip_bomb", "size_bytes": 3 * MiB, "first_n": 1}])
    answer = post(hitpaw_emulator, STATUS, {"job_id": "x"})
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.headers["Content-Type"] == "application/json"
    assert len(answer.content) == 3 * MiB  # requests inflates it (a client with no cap would take 1 GiB)
    assert answer.content.startswith(envelope())
    assert set(answer.content[len(envelope()) :]) == {ord("0")}
    assert int(answer.headers["Content-Length"]) < 4096


@pytest.mark.parametrize("size", [1, 8, 9, MiB - 1, MiB, MiB + 8, 3 * MiB + 17])
def test_gzip_bomb_inflates_to_exactly_its_size(size: int) -> None:
    bomb = hostile.gzip_bomb(PNG, b"\0", size)
    assert gzip.decompress(bomb) == (PNG + bytes(size))[:size]
    assert len(bomb) < 64 + size // 500


def test_gzip_bomb_is_built_once() -> None:
    first = hostile.gzip_bomb(b"head", b"x", 2 * MiB + 5)
    assert hostile.gzip_bomb(b"head", b"x", 2 * MiB + 5) is first


# --- drip


def test_drip_sends_the_normal_answer_slowly(
    hitpaw_emulator: HitPawEmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps = RecordedSleeps()
    monkeypatch.setattr(hostile, "asyncio", sleeps)
    hitpaw_emulator.set_faults(["drip:delay_s=0.05,size_bytes=10,paths=/api/task-status"])
    answer = post(hitpaw_emulator, STATUS, {"job_id": "x"})
    # A pause before each of the first ten bytes: 0.5 s in all, but no read waits more than 0.05 s.
    assert sleeps.delays == [0.05] * 10
    assert answer.json() == {"code": 100400002, "message": "Bad Request", "data": {}}
    assert int(answer.headers["Content-Length"]) == len(answer.content)
    assert streams(hitpaw_emulator)["bytes_sent"] == len(answer.content)


def test_drip_carries_a_submission_out(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["drip:delay_s=0.01,size_bytes=5"])
    job_id = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).json()["data"]["job_id"]
    state = hitpaw_emulator.state()
    assert [job["job_id"] for job in state["jobs"]] == [job_id]
    assert state["coins"] == 100_000 - 20


def test_drip_stops_when_the_client_leaves(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["drip:delay_s=0.1,paths=/api/task-status"])  # ~6 s for the whole answer
    sock = raw_request(hitpaw_emulator, STATUS)
    try:
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")
        eventually(lambda: streams(hitpaw_emulator)["bytes_sent"] >= 2)
    finally:
        sock.close()
    eventually(lambda: streams(hitpaw_emulator)["active"] == 0)
    assert streams(hitpaw_emulator)["cut"] == 1
    assert streams(hitpaw_emulator)["bytes_sent"] < 20


def test_a_drip_is_cut_at_the_time_limit(
    hitpaw_emulator: HitPawEmulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostile, "STREAM_TIME_LIMIT", 0.3)
    hitpaw_emulator.set_faults(["drip:delay_s=0.05,paths=/api/task-status"])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # the body is shorter than announced
        post(hitpaw_emulator, STATUS, {"job_id": "x"})
    assert streams(hitpaw_emulator)["cut"] == 1


# --- png_then_html


def test_png_then_html(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["png_then_html"])  # /results/* by default
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code == 400
    answer = requests.get(hitpaw_emulator.url("/results/abc/cutout.png"), timeout=5)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "image/png"
    assert answer.content.startswith(PNG + b"<!DOCTYPE html>")
    assert answer.content.rstrip().endswith(b"</html>")


# --- answers altered after the job was created and charged


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ('odd_coins:value="20"', "20"),
        ("odd_coins:value=-5", -5),
        ("odd_coins:value=true", True),
        ("odd_coins:value=1e300", 1e300),
        ("odd_coins:value=null", None),
        ({"kind": "odd_coins", "value": 20.5}, 20.5),
        ({"kind": "odd_coins", "value": {"coins": 20}}, {"coins": 20}),
    ],
)
def test_odd_coins(hitpaw_emulator: HitPawEmulatorHandle, rule: Any, expected: Any) -> None:
    hitpaw_emulator.set_faults([rule])
    data = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).json()["data"]
    assert data["consume_coins"] == expected
    state = hitpaw_emulator.state()
    assert state["coins"] == 100_000 - 20
    assert [job["job_id"] for job in state["jobs"]] == [data["job_id"]]
    assert wait_done(hitpaw_emulator, data["job_id"])["status"] == "COMPLETED"


def test_odd_coins_missing(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(['odd_coins:value="__missing__"'])
    data = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).json()["data"]
    assert set(data) == {"job_id"}
    assert hitpaw_emulator.state()["coins"] == 100_000 - 20


def test_altering_rules_leave_errors_and_other_paths_alone(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["odd_coins:value=-5", "bad_job_id:value=1"])
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).json()["code"] == 100400002
    answer = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator), key="wrong")
    assert answer.json() == {"code": 110400000, "message": "api_key is not valid", "data": {}}
    assert hitpaw_emulator.state()["faults_served"] == {"odd_coins": 1}


@pytest.mark.parametrize(
    "value", ["job\n\x1b[31mred\x1b[0m\r\x00", "a" * 10_000, 42, None, ["list"], "__missing__"]
)
def test_bad_job_id(hitpaw_emulator: HitPawEmulatorHandle, value: Any) -> None:
    response = control(
        hitpaw_emulator, "POST", "/_emulator/faults", json=[{"kind": "bad_job_id", "value": value}]
    )
    assert response.status_code == 200
    data = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).json()["data"]
    if value == "__missing__":
        assert "job_id" not in data
    else:
        assert data["job_id"] == value
    assert data["consume_coins"] == 20
    state = hitpaw_emulator.state()
    assert state["coins"] == 100_000 - 20
    assert len(state["jobs"]) == 1
    assert state["jobs"][0]["job_id"] != value


def test_bad_job_id_from_the_text_form(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(['bad_job_id:value="a,b\\n\\u001b[31m",first_n=1'])
    ids = [post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).json()["data"]["job_id"] for _ in "12"]
    assert ids[0] == "a,b\n\x1b[31m"
    assert ids[1] == hitpaw_emulator.state()["jobs"][1]["job_id"]  # first_n=1: the second is left alone


def test_same_job_id(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["same_job_id"])
    first = submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg"))
    second = submit(hitpaw_emulator, hitpaw_emulator.sample_url("mug.jpg"))
    third = submit(hitpaw_emulator, hitpaw_emulator.sample_url("portrait.png"))
    assert first == second == third
    state = hitpaw_emulator.state()
    assert state["coins"] == 100_000 - 60
    jobs = [job["job_id"] for job in state["jobs"]]
    assert len(set(jobs)) == 3
    assert jobs[0] == first  # the id every answer carries is the first job's
    assert {job["file_url"] for job in state["jobs"]} == {
        hitpaw_emulator.sample_url(name) for name in ("shoe.jpg", "mug.jpg", "portrait.png")
    }
    hitpaw_emulator.set_faults(["same_job_id"])  # new rules start over
    assert submit(hitpaw_emulator, hitpaw_emulator.sample_url("shoe.jpg")) not in jobs


# --- huge_json


def test_huge_json_of_a_given_size_is_valid_json(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["huge_json:size_bytes=1000000,first_n=1"])
    answer = post(hitpaw_emulator, STATUS, {"job_id": "x"})
    assert answer.status_code == 200
    assert int(answer.headers["Content-Length"]) == len(answer.content) == 1_000_000
    body = json.loads(answer.content)
    assert body["code"] == 200
    assert body["data"]["status"] == "CONVERTING"
    assert len(body["data"]["padding"]) > 999_000
    state = hitpaw_emulator.state()
    assert (state["jobs"], state["streams"]["cut"]) == ([], 0)


def test_huge_json_default_is_300_mib_and_stops_when_the_client_leaves(
    hitpaw_emulator: HitPawEmulatorHandle,
) -> None:
    hitpaw_emulator.set_faults(["huge_json"])
    with requests.post(hitpaw_emulator.url(SUBMIT), json={}, stream=True, timeout=5) as answer:
        assert int(answer.headers["Content-Length"]) == 300 * MiB
        assert answer.headers["Content-Type"] == "application/json"
        assert read_at_most(answer, 2 * MiB).startswith(b'{"code":200,"message":"OK","data":{"job_id":"')
    eventually(lambda: streams(hitpaw_emulator)["active"] == 0)
    assert streams(hitpaw_emulator)["cut"] == 1
    assert streams(hitpaw_emulator)["bytes_sent"] < 40 * MiB
    assert hitpaw_emulator.state()["coins"] == 100_000


def test_the_minimal_huge_json_is_the_envelope(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["huge_json:size_bytes=1,paths=/api/oss/presign-put"])
    body = post(hitpaw_emulator, "/api/oss/presign-put", {"filename": "a.jpg"}).json()
    assert body["code"] == 0
    assert body["data"]["padding"] == ""


def test_reset_forgets_the_stream_totals(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["endless:size_bytes=1000,paths=/results/*"])
    assert len(requests.get(hitpaw_emulator.url("/results/a/b.png"), timeout=5).content) == 1000
    assert streams(hitpaw_emulator)["bytes_sent"] == 1000
    hitpaw_emulator.reset()
    assert streams(hitpaw_emulator) == {"active": 0, "bytes_sent": 0, "cut": 0}
