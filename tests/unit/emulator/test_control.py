"""The control endpoint ``/_emulator/*`` over HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import requests

from tests.unit.emulator.client import STATUS, assert_error, post, refused, status, submit

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


def test_no_access_key_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    ctl = requests.post(
        hitpaw_emulator.url("/_emulator/keys"), json={"key": "k2", "state": "no_access"}, timeout=5
    )
    assert ctl.status_code == 200
    response = post(hitpaw_emulator, "/api/image-segmentation", {"file_url": "http://x/y.jpg"}, key="k2")
    assert_error(response, 400, 100400000, "No access")
    bad = requests.post(hitpaw_emulator.url("/_emulator/keys"), json={"key": "k", "state": "?"}, timeout=5)
    assert bad.status_code == 400


def test_expire_one_job_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    keep = submit(hitpaw_emulator, hitpaw_emulator.sample_url("broken.jpg"))
    gone = submit(hitpaw_emulator, hitpaw_emulator.sample_url("broken.jpg"))
    response = requests.post(hitpaw_emulator.url(f"/_emulator/jobs/{gone}/expire"), timeout=5)
    assert response.status_code == 200
    assert requests.post(hitpaw_emulator.url("/_emulator/jobs/nope/expire"), timeout=5).status_code == 404
    assert_error(post(hitpaw_emulator, "/api/task-status", {"job_id": gone}), 400, 100400002, "Bad Request")
    assert status(hitpaw_emulator, keep)["job_id"] == keep


def test_faults_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    ctl = hitpaw_emulator.url("/_emulator/faults")
    response = requests.post(ctl, json=[{"kind": "500", "first_n": 1}, "429:share=0.5"], timeout=5)
    assert response.status_code == 200
    assert [r["kind"] for r in response.json()["rules"]] == ["500", "429"]
    assert requests.get(ctl, timeout=5).json()["rules"][0]["kind"] == "500"
    assert requests.post(ctl, json=[{"kind": "teapot"}], timeout=5).status_code == 400
    assert requests.post(ctl, data=b"{", timeout=5).status_code == 400
    assert requests.post(ctl, json={"rules": ["500"], "seed": 3}, timeout=5).status_code == 200
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code == 500
    # control requests are never faulted
    assert requests.get(hitpaw_emulator.url("/_emulator/state"), timeout=5).status_code == 200
    assert requests.delete(ctl, timeout=5).json() == {"rules": []}
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code == 400


def test_config_through_the_control_endpoint(hitpaw_emulator: HitPawEmulatorHandle) -> None:
    ctl = hitpaw_emulator.url("/_emulator/config")
    response = requests.post(ctl, json={"coins": 30, "job_seconds": 0.1, "result_ttl": 60}, timeout=5)
    assert response.status_code == 200
    assert response.json()["coins"] == 30
    assert requests.post(ctl, json={"colour": 1}, timeout=5).status_code == 400
    assert requests.post(ctl, json={"coins": -1}, timeout=5).status_code == 400
    assert requests.post(hitpaw_emulator.url("/_emulator/reset"), timeout=5).status_code == 200
    assert hitpaw_emulator.state()["coins"] == 100_000


def test_down_through_the_control_endpoint_and_reset_brings_it_back(
    hitpaw_emulator: HitPawEmulatorHandle,
) -> None:
    response = requests.post(hitpaw_emulator.url("/_emulator/down"), json={"seconds": 30}, timeout=5)
    assert response.json() == {"down_for": 30}
    assert refused(hitpaw_emulator.server.port)
    hitpaw_emulator.reset()
    assert post(hitpaw_emulator, STATUS, {"job_id": "x"}).status_code == 400
