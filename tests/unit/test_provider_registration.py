"""Airflow itself finds the provider: ``airflow providers list`` and the connection form, on this version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_hitpaw._connection_form import EXTRA_FIELDS


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
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        "airflow_provider_hitpaw.links.HitPawCutoutLink",
        "airflow_provider_hitpaw.links.HitPawMaskLink",
        "airflow_provider_hitpaw.links.HitPawOutputFolderLink",
    ]
