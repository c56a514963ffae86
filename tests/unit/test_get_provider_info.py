"""Airflow itself finds the provider: ``airflow providers list`` and the connection form, on this version.

``get_provider_info`` is the ``apache_airflow_provider`` entry point Airflow registers the provider by; the
hooks' own connection-type attributes and form (what Airflow 2.11 reads instead) are checked here too, beside
the provider info they must agree with.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_hitpaw import __version__, _api
from airflow_provider_hitpaw._connection_form import EXTRA_FIELDS
from airflow_provider_hitpaw.get_provider_info import get_provider_info
from airflow_provider_hitpaw.hooks.hitpaw import HitPawAsyncHook, HitPawHook
from tests.conftest import CONN_ID


def run_airflow(tmp_path: Path, *args: str) -> str:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Airflow 3.0 prints INFO lines on stdout before a command's JSON.
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    return result.stdout


def test_airflow_providers_list_shows_the_package(tmp_path: Path) -> None:
    listed = json.loads(run_airflow(tmp_path, "providers", "list", "-o", "json"))
    ours = [p for p in listed if p["package_name"] == "airflow-provider-hitpaw"]
    assert len(ours) == 1
    assert ours[0]["version"] == "0.1.0"


def test_the_hitpaw_connection_type_is_registered(tmp_path: Path) -> None:
    hooks = json.loads(run_airflow(tmp_path, "providers", "hooks", "-o", "json"))
    (ours,) = [h for h in hooks if h["connection_type"] == "hitpaw"]
    assert ours["class"] == "airflow_provider_hitpaw.hooks.hitpaw.HitPawHook"
    assert ours["conn_id_attribute_name"] == "hitpaw_conn_id"


def test_the_connection_form_is_labelled_for_this_airflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow 2.11 reads the form from the hook class, Airflow 3 from the provider info: check this one."""
    import airflow

    if airflow.__version__.startswith("2."):
        code = (
            "from airflow.providers_manager import ProvidersManager; import json; pm = ProvidersManager();"
            "print(json.dumps({'behaviour': pm.field_behaviours.get('hitpaw'),"
            " 'widgets': sorted(k for k in pm.connection_form_widgets if 'hitpaw' in k)}))"
        )
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True
        ).stdout
        form = json.loads(out.strip().splitlines()[-1])
        behaviour = form["behaviour"]
        assert form["widgets"] == sorted(f"extra__hitpaw__{name}" for name in EXTRA_FIELDS)
        assert set(behaviour["hidden_fields"]) >= {"login", "schema", "port"}
        assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    else:
        from airflow_provider_hitpaw.get_provider_info import get_provider_info

        (conn_type,) = get_provider_info()["connection-types"]
        assert conn_type["connection-type"] == "hitpaw"
        assert conn_type["ui-field-behaviour"]["relabeling"] == {"host": "Base URL", "password": "API key"}
        assert set(conn_type["ui-field-behaviour"]["hidden-fields"]) >= {"login", "schema", "port"}
        assert "ca_bundle" in conn_type["conn-fields"]


def test_extra_links_are_registered_for_airflow_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Airflow 2.11's webserver shows only link classes a provider registers; 3.x needs no registration."""
    code = (
        "from airflow.providers_manager import ProvidersManager; import json;"
        "print(json.dumps(sorted(c for c in ProvidersManager().extra_links_class_names if 'hitpaw' in c)))"
    )
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=True
    )
    assert sorted(json.loads(out.stdout.strip().splitlines()[-1])) == [
        "airflow_provider_hitpaw.links.HitPawContactSheetLink",
        "airflow_provider_hitpaw.links.HitPawCutoutLink",
        "airflow_provider_hitpaw.links.HitPawMaskLink",
        "airflow_provider_hitpaw.links.HitPawOutputFolderLink",
    ]


# --- what the package declares: its provider info, entry point and connection form -----------------


def test_provider_info() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-hitpaw"
    assert info["name"] == "HitPaw"
    assert info["description"]
    assert info["versions"] == [__version__]
    [connection_type] = info["connection-types"]
    assert connection_type["connection-type"] == "hitpaw"
    assert connection_type["hook-name"] == "HitPaw"
    module, _, name = connection_type["hook-class-name"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is HitPawHook
    assert connection_type["conn-fields"]["ca_bundle"]["label"]


def test_provider_info_form_matches_the_hook() -> None:
    [connection_type] = get_provider_info()["connection-types"]
    declared = connection_type["ui-field-behaviour"]
    behaviour = HitPawHook.get_ui_field_behaviour()
    assert declared == {
        "hidden-fields": behaviour["hidden_fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def test_provider_info_matches_airflow_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import airflow

    schema_path = Path(airflow.__file__).parent / "provider_info.schema.json"
    jsonschema.validate(get_provider_info(), json.loads(schema_path.read_text()))


def test_provider_info_modules_import() -> None:
    info = get_provider_info()
    modules = {
        m
        for kind in ("hooks", "operators", "sensors", "triggers")
        for e in info[kind]
        for m in e["python-modules"]
    }
    assert len(modules) == 4
    for module in modules:
        importlib.import_module(module)


def test_provider_info_loads_no_http_stack() -> None:
    code = (
        "import json, sys\n"
        "from airflow_provider_hitpaw.get_provider_info import get_provider_info\n"
        "get_provider_info()\n"
        "heavy = ('airflow_provider_hitpaw.hooks', 'airflow_provider_hitpaw.hooks.hitpaw',"
        " 'aiohttp', 'requests')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_provider_entry_point() -> None:
    from importlib.metadata import entry_points

    [entry_point] = [
        ep
        for ep in entry_points(group="apache_airflow_provider")
        if ep.value.startswith("airflow_provider_hitpaw")
    ]
    assert entry_point.load() is get_provider_info


def test_ui_field_behaviour() -> None:
    behaviour = HitPawHook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port", "extra"}
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API key"}
    assert _api.DEFAULT_BASE_URL in behaviour["placeholders"]["host"]


def test_connection_form_widgets_on_airflow_2() -> None:
    pytest.importorskip("flask_appbuilder")
    pytest.importorskip("wtforms")
    assert set(HitPawHook.get_connection_form_widgets()) == {
        "ca_bundle",
        "allow_insecure_http",
        "max_download_bytes",
        "download_timeout",
    }


@pytest.mark.parametrize("hook_class", [HitPawHook, HitPawAsyncHook], ids=["sync", "async"])
def test_both_hooks_serve_the_hitpaw_connection_type(hook_class: type[HitPawHook | HitPawAsyncHook]) -> None:
    assert hook_class.conn_type == "hitpaw"
    assert hook_class.hook_name == "HitPaw"
    assert hook_class.conn_name_attr == "hitpaw_conn_id"
    assert hook_class.default_conn_name == CONN_ID
