"""Run from a copy outside the repository, in a venv that has only the built wheel (``make wheel-check``):
what a user gets from ``pip install "airflow-provider-hitpaw[emulator]"``, without this repository.

This file is also the complete example of testing one's own DAG that the README shows.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import airflow_provider_hitpaw


def test_the_package_comes_from_the_wheel_not_the_repository() -> None:
    assert "site-packages" in airflow_provider_hitpaw.__file__, airflow_provider_hitpaw.__file__


def test_hitpaw_demo_runs_a_shipped_example(tmp_path: Path) -> None:
    demo = Path(sys.executable).with_name("hitpaw-demo")
    run = subprocess.run(
        [str(demo), "--output", str(tmp_path / "out"), "--job-seconds", "1"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "5 jobs cost 100 coins" in run.stdout
    assert len(list((tmp_path / "out").glob("sku-*/main*.png"))) == 10
    assert len(list((tmp_path / "out").glob("sku-*/main.storefront.jpg"))) == 5


def test_hitpaw_demo_runs_the_folder_example_as_the_readme_says(tmp_path: Path) -> None:
    """``hitpaw-demo --dag example_hitpaw_folder`` once failed: the example's input folder did not exist."""
    demo = Path(sys.executable).with_name("hitpaw-demo")
    run = subprocess.run(
        [str(demo), "--dag", "example_hitpaw_folder", "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 4
    assert len(list((tmp_path / "out").glob("*.hitpaw.json"))) == 4


# --- testing your own DAG ------------------------------------------------------------------------------

MY_DAG = """
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator

from my_settings import CATALOGUE  # a module beside the DAG file, as DAG folders often have

with DAG(dag_id="nightly_cutouts", schedule=None, start_date=datetime(2026, 1, 1), catchup=False,
         params={"output": "file:///tmp/cutouts"}):
    SegmentImageBatchOperator(
        task_id="cut_out",
        file_urls=CATALOGUE,
        output_path="{{ params.output }}",
        poll_interval=1,
    )
"""


def test_my_dag_segments_my_catalogue(hitpaw_emulator: Any, hitpaw_dag_run: Any, tmp_path: Path) -> None:
    """Run a DAG of your own end to end, against the local emulator: no key, no coin, no set-up."""
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "nightly_cutouts.py").write_text(textwrap.dedent(MY_DAG))
    catalogue = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
    (dags / "my_settings.py").write_text(f"CATALOGUE = {catalogue!r}\n")

    run = hitpaw_dag_run(
        dags / "nightly_cutouts.py", "nightly_cutouts", conf={"output": f"file://{tmp_path}/out"}
    )

    assert run.succeeded, run.output[-4000:]
    assert len(hitpaw_emulator.state()["jobs"]) == 2
    assert len(list((tmp_path / "out").glob("*.png"))) == 4
