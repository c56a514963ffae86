"""What Airflow 3's own UI shows of the provider, in headless Chromium driven by Playwright.

A real api-server (with scheduler, dag-processor and triggerer) serves the UI; the browser logs in through
the simple auth manager's login form with the generated admin password, then:

* opens Admin > Connections > Add Connection, chooses the type "HitPaw" and checks the form: host and
  password relabelled "Base URL" and "API key", login, schema and port hidden (the type "Generic" is
  chosen first, to show that those three are there to hide), and the extra fields "CA bundle path" and
  "Allow plain http to a non-loopback host" shown;
* runs the DAG ``hitpaw_ui`` (one deferrable SegmentImageOperator on an emulator sample) to success
  through the REST API, opens the task instance's Details tab and checks the extra links "HitPaw cut-out"
  and "HitPaw mask" point at the result's ``res_url`` and ``mask_url``.

Screenshots go to ``test-artifacts/browser/``, whether the test passes or fails. The module skips when
``/usr/bin/chromium`` (Debian's ``chromium``) or the ``playwright`` package is missing.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

airflow = pytest.importorskip("airflow")
if airflow.__version__.startswith("2."):
    pytest.skip("the browser test runs on Airflow 3's UI", allow_module_level=True)

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing: pip install playwright"
)

from tests.integration.airflow_cluster import ARTIFACTS, AirflowCluster, running_cluster  # noqa: E402

DAGS = Path(__file__).parent / "dags"
SHOTS = ARTIFACTS / "browser"
DAG_ID = "hitpaw_ui"
TASK_ID = "segment"
# Without the background-networking flags Chromium keeps dialling Google, and this machine refuses it.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def cluster(
    hitpaw_emulator_server: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[AirflowCluster]:
    with running_cluster(
        hitpaw_emulator_server,
        tmp_path_factory.mktemp("airflow-home-browser"),
        [DAGS / f"{DAG_ID}.py"],
        keep_logs_as="airflow-browser",
        keep_logs_if=lambda: request.session.testsfailed,
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def page(cluster: AirflowCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium page logged into the UI as the simple auth manager's admin."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            context.set_default_timeout(UI_TIMEOUT_MS)
            sync_api.expect.set_options(timeout=UI_TIMEOUT_MS // 2)
            page = context.pages[0] if context.pages else context.new_page()
            with screenshot_always(page, "login"):
                log_in(page, cluster)
            yield page
        finally:
            context.close()


@contextlib.contextmanager
def screenshot_always(page: Any, name: str) -> Iterator[None]:
    """Run the block, then screenshot the page as ``<name>.png``, or ``<name>-failed.png`` if it raised."""
    failed = True
    try:
        yield
        failed = False
    finally:
        # Only this run's outcome is left: the other variant, from an earlier run, goes.
        (SHOTS / f"{name}{'' if failed else '-failed'}.png").unlink(missing_ok=True)
        shot = SHOTS / f"{name}{'-failed' if failed else ''}.png"
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True, animations="disabled")


def log_in(page: Any, cluster: AirflowCluster) -> None:
    passwords = json.loads((cluster.home / "simple_auth_manager_passwords.json.generated").read_text())
    username, password = next(iter(passwords.items()))
    page.goto(f"http://127.0.0.1:{cluster.port}/")
    page.wait_for_url(re.compile(r"/auth/login"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)
    sync_api.expect(page.get_by_role("button", name="Admin")).to_be_visible()


def visible_labels(scope: Any) -> set[str]:
    """The texts of the visible field labels in ``scope``, without the required-field asterisk."""
    labels = set()
    for label in scope.locator("label").all():
        if label.is_visible():
            text = " ".join(label.inner_text().replace("*", " ").split())
            if text:
                labels.add(text)
    return labels


def choose_connection_type(page: Any, dialog: Any, name: str) -> None:
    combo = dialog.get_by_role("combobox", name="Connection Type")
    combo.fill(name)
    page.get_by_role("option", name=name, exact=True).click()
    sync_api.expect(dialog.get_by_text(name, exact=True)).to_be_visible()


def open_section(dialog: Any, name: str) -> None:
    """Open one section of the form's accordion (opening one closes the others)."""
    dialog.get_by_role("button", name=name, exact=True).click()


def test_connection_form_shows_the_hitpaw_fields(page: Any, cluster: AirflowCluster) -> None:
    expect = sync_api.expect
    with screenshot_always(page, "connection-form-extra-fields"):
        page.goto(f"http://127.0.0.1:{cluster.port}/")
        page.get_by_role("button", name="Admin").click()
        page.get_by_role("menuitem", name="Connections").click()
        page.wait_for_url(re.compile(r"/connections$"))
        page.get_by_role("button", name="Add Connection").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_role("heading", name="Add Connection")).to_be_visible()

        # A type that keeps every standard field: login, schema and port are there to be hidden.
        choose_connection_type(page, dialog, "Generic")
        expect(dialog.get_by_text("Login", exact=True)).to_be_visible()
        generic = visible_labels(dialog)
        assert {"Host", "Login", "Password", "Port", "Schema"} <= generic, generic

        choose_connection_type(page, dialog, "HitPaw")
        with screenshot_always(page, "connection-form-standard-fields"):
            expect(dialog.get_by_text("Base URL", exact=True)).to_be_visible()
            standard = visible_labels(dialog)
            assert {"Base URL", "API key"} <= standard, standard
            assert not {"Login", "Schema", "Port", "Host", "Password"} & standard, standard
            # The relabelled fields are real inputs, with the provider's placeholders.
            base_url = dialog.get_by_label("Base URL")
            expect(base_url).to_be_editable()
            assert "https://api-base.hitpaw.com" in (base_url.get_attribute("placeholder") or "")
            api_key = dialog.get_by_label("API key")
            expect(api_key).to_be_editable()
            assert api_key.get_attribute("type") == "password"

        open_section(dialog, "Extra Fields")
        expect(dialog.get_by_text("CA bundle path", exact=True)).to_be_visible()
        expect(dialog.get_by_text("Base URL", exact=True)).to_be_hidden()
        extra = visible_labels(dialog)
        assert {"CA bundle path", "Allow plain http to a non-loopback host"} <= extra, extra
        # Airflow labels this input without tying the label to it: find it through its field group.
        ca_bundle = dialog.get_by_role("group").filter(has_text="CA bundle path").get_by_role("textbox")
        expect(ca_bundle).to_be_editable()
        insecure = dialog.get_by_role("checkbox", name="Allow plain http to a non-loopback host")
        expect(insecure).not_to_be_checked()


def run_to_success(cluster: AirflowCluster, conf: dict[str, Any], timeout: float = 180) -> str:
    cluster.wait_for_dag(DAG_ID)
    run_id = cluster.trigger(DAG_ID, conf)
    deadline = time.monotonic() + timeout
    state = "queued"
    while time.monotonic() < deadline:
        state = cluster.run_state(DAG_ID, run_id)
        if state in ("success", "failed"):
            break
        time.sleep(0.5)
    assert state == "success", (state, cluster.task_states(DAG_ID, run_id))
    return run_id


def test_task_instance_shows_the_hitpaw_extra_links(
    page: Any, cluster: AirflowCluster, hitpaw_emulator_server: Any
) -> None:
    hitpaw_emulator_server.reset()
    run_id = run_to_success(cluster, {"file_url": hitpaw_emulator_server.sample_url("shoe.jpg")})
    quoted_run = quote(run_id, safe="")
    ti_path = f"/dags/{DAG_ID}/dagRuns/{quoted_run}/taskInstances/{TASK_ID}"
    result = cluster.request("GET", f"{ti_path}/xcomEntries/return_value")["value"]
    assert result["status"] == "COMPLETED", result
    expected = {"HitPaw cut-out": result["res_url"], "HitPaw mask": result["mask_url"]}

    with screenshot_always(page, "task-instance-extra-links"):
        page.goto(f"http://127.0.0.1:{cluster.port}/dags/{DAG_ID}/runs/{quoted_run}/tasks/{TASK_ID}")
        sync_api.expect(page.get_by_role("heading", name=TASK_ID, exact=True)).to_be_visible()
        page.get_by_role("link", name="Details", exact=True).click()
        shown = {}
        for name in expected:
            link = page.get_by_role("link", name=name, exact=True)
            sync_api.expect(link).to_be_visible()
            shown[name] = link.get_attribute("href")
        assert shown == expected

    # The API agrees with the page, the operator pushed what the links read (the links contract), and
    # the links lead to the images themselves.
    assert cluster.request("GET", f"{ti_path}/links")["extra_links"] == expected
    pushed = cluster.request("GET", f"{ti_path}/xcomEntries/hitpaw_links")["value"]
    assert pushed == {"cutout": result["res_url"], "mask": result["mask_url"]}
    for url in expected.values():
        answer = requests.get(url, timeout=30)
        assert answer.status_code == 200, url
        assert answer.content.startswith(b"\x89PNG"), url
