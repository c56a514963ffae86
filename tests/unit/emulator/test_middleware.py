"""Every fault kind as a client sees it over HTTP, and which requests a rule picks (the fault middleware)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_hitpaw.emulator import middleware
from tests.unit.emulator.client import STATUS, SUBMIT, RecordedSleeps, post, submit_body

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


def test_500(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults([{"kind": "500", "first_n": 1}])
    response = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator))
    assert response.status_code == 500
    assert response.json() == {"code": 100500000, "message": "Internal error", "data": {}}


def test_503_html(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["503_html:first_n=1"])
    response = post(hitpaw_emulator, STATUS, {"job_id": "x"})
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text
    with pytest.raises(requests.JSONDecodeError):
        response.json()


@pytest.mark.parametrize(("retry_after", "header"), [(None, None), (1, "1"), (2.5, "2.5")])
def test_429(hitpaw_emulator: HitPawEmulatorHandle, retry_after: float | None, header: str | None) -> None:
    rule: dict[str, Any] = {"kind": "429", "first_n": 1}
    if retry_after is not None:
        rule["retry_after"] = retry_after
    hitpaw_emulator.set_faults([rule])
    response = post(hitpaw_emulator, STATUS, {"job_id": "x"})
    assert response.status_code == 429
    assert response.json() == {"code": 100429000, "message": "Too Many Requests", "data": {}}
    assert response.headers.get("Retry-After") == header


def test_drop(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["drop:first_n=1"])
    with pytest.raises(requests.ConnectionError):
        post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator))
    state = hitpaw_emulator.state()
    assert state["jobs"] == []
    assert state["coins"] == 100_000
    assert post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).status_code == 200


def test_slow(hitpaw_emulator: HitPawEmulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    hitpaw_emulator.set_faults(["slow:first_n=1,delay_s=0.4,paths=/api/task-status"])
    with monkeypatch.context() as patched:
        sleeps = RecordedSleeps()
        patched.setattr(middleware, "asyncio", sleeps)
        response = post(hitpaw_emulator, STATUS, {"job_id": "x"})
    assert sleeps.delays == [0.4]
    assert response.json()["code"] == 100400002  # answered normally, just late
    # Really late: the server waits longer than this client does (which a busy machine only lengthens).
    hitpaw_emulator.set_faults(["slow:first_n=1,delay_s=0.5"])
    with pytest.raises(requests.Timeout):
        post(hitpaw_emulator, STATUS, {"job_id": "x"}, timeout=0.2)


def test_non_json(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["non_json:first_n=1"])
    response = post(hitpaw_emulator, STATUS, {"job_id": "x"})
    assert response.status_code == 200
    assert response.text == "not json"


def test_truncated_json(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["truncated_json:first_n=1"])
    response = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator))
    assert response.status_code == 200
    assert response.text.startswith('{"code": 200')
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)
    assert hitpaw_emulator.state()["jobs"] == []


def test_code_under_200(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["code_under_200:first_n=1"])
    response = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator))
    assert response.status_code == 200
    assert response.json() == {"code": 100500000, "message": "Internal error", "data": {}}
    assert hitpaw_emulator.state()["coins"] == 100_000


def test_unknown_status(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["unknown_status:first_n=1"])
    job = post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).json()["data"]["job_id"]
    data = post(hitpaw_emulator, STATUS, {"job_id": job}).json()["data"]
    assert data["status"] == "PAUSED"
    assert data["job_id"] == job
    assert data["original_url"] == hitpaw_emulator.sample_url("shoe.jpg")
    assert post(hitpaw_emulator, STATUS, {"job_id": job}).json()["data"]["status"] in {
        "CONVERTING",
        "COMPLETED",
    }


@pytest.mark.parametrize(("path", "code"), [(STATUS, 200), (SUBMIT, 200), ("/api/oss/presign-put", 0)])
def test_missing_fields(hitpaw_emulator: HitPawEmulatorHandle, path: str, code: int) -> None:
    hitpaw_emulator.set_faults(["missing_fields:first_n=1"])
    response = post(hitpaw_emulator, path, {"job_id": "x", "file_url": "http://x/y.jpg", "filename": "a.jpg"})
    assert response.status_code == 200
    assert response.json()["code"] == code
    assert response.json()["data"] == {}


def test_faults_replace_even_a_bad_key(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["500:first_n=1"])
    response = requests.post(hitpaw_emulator.url(STATUS), json={}, headers={"Apikey": "bad"}, timeout=5)
    assert response.status_code == 500


def test_first_n_and_counters(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["500:first_n=3"])
    codes = [post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).status_code for _ in range(5)]
    assert codes == [500, 500, 500, 200, 200]
    state = hitpaw_emulator.state()
    assert len(state["jobs"]) == 2
    assert state["coins"] == 100_000 - 40
    assert state["faults_served"] == {"500": 3}
    assert state["requests"][SUBMIT] == 5
    assert state["faults"][0]["fired"] == 3


def test_share_is_reproducible(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    def run() -> list[int]:
        hitpaw_emulator.set_faults([{"kind": "429", "share": 0.5}], seed=42)
        with requests.Session() as session:
            session.headers["Apikey"] = hitpaw_emulator.api_key
            return [
                session.post(hitpaw_emulator.url(STATUS), json={"job_id": "x"}, timeout=5).status_code
                for _ in range(60)
            ]

    first = run()
    assert first == run()
    assert set(first) == {400, 429}
    assert 15 < first.count(429) < 45


def test_share_zero_and_one(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["500:share=0", "429:share=1"])
    assert {post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code for _ in range(5)} == {429}


def test_paths_restrict_the_fault(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["500:paths=/api/task-status"])
    assert post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).status_code == 200
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code == 500


def test_faults_on_result_downloads(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    hitpaw_emulator.set_faults(["503_html:first_n=1,paths=/samples/*"])
    assert requests.get(hitpaw_emulator.sample_url("shoe.jpg"), timeout=5).status_code == 503
    assert requests.get(hitpaw_emulator.sample_url("shoe.jpg"), timeout=5).status_code == 200


@pytest.mark.parametrize("kind", ["drop", "500"])
def test_after_commit_creates_the_job_and_charges(hitpaw_emulator: HitPawEmulatorHandle, kind: str) -> None:
    hitpaw_emulator.set_faults([f"{kind}:first_n=1,after_commit=true"])
    if kind == "drop":
        with pytest.raises(requests.ConnectionError):
            post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator))
    else:
        assert post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).status_code == 500
    state = hitpaw_emulator.state()
    assert len(state["jobs"]) == 1
    assert state["coins"] == 100_000 - 20
    # The client retries: a duplicate job is what a non-idempotent submit costs.
    assert post(hitpaw_emulator, SUBMIT, submit_body(hitpaw_emulator)).status_code == 200
    assert len(hitpaw_emulator.state()["jobs"]) == 2
