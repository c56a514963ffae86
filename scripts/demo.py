"""``make demo``: segment the emulator's sample images with the example DAG, end to end, on real Airflow.

Starts the local HitPaw emulator, runs ``airflow dags test example_hitpaw_mapped`` against it (the
connection comes from ``AIRFLOW_CONN_HITPAW_DEFAULT``), writes the cut-outs and masks to ``./demo-output/``,
prints where they are and what each job cost, and stops the emulator. Airflow's own state goes to a
throw-away ``AIRFLOW_HOME`` so that the demo never touches yours.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from airflow_provider_hitpaw.emulator.startup import parse_startup_line

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path(os.environ.get("HITPAW_DEMO_OUTPUT", ROOT / "demo-output")).resolve()
DAG_ID = "example_hitpaw_mapped"
DEMO_KEY = "demo-key-not-a-real-one"


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_hitpaw.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--api-key",
            DEMO_KEY,
            "--job-seconds",
            "4",
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    try:
        base_url, _control_token = parse_startup_line(line)
    except ValueError:
        process.kill()
        raise SystemExit(f"the emulator did not start: {line!r}") from None
    return process, base_url


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def main() -> int:
    if OUTPUT.exists():
        shutil.rmtree(OUTPUT)
    emulator, base_url = start_emulator()
    print(f"HitPaw emulator running at {base_url}")
    try:
        with tempfile.TemporaryDirectory(prefix="hitpaw-demo-airflow-") as airflow_home:
            env = {
                **os.environ,
                "AIRFLOW_HOME": airflow_home,
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW_CONN_HITPAW_DEFAULT": json.dumps(
                    {"conn_type": "hitpaw", "host": base_url, "password": DEMO_KEY}
                ),
                "HITPAW_EXAMPLE_SAMPLE_BASE_URL": f"{base_url}/samples",
                "HITPAW_EXAMPLE_OUTPUT_DIR": str(OUTPUT),
            }
            airflow = [sys.executable, "-m", "airflow"]
            subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True)
            started = time.monotonic()
            print(f"Running `airflow dags test {DAG_ID}` ...", flush=True)
            run = subprocess.run([*airflow, "dags", "test", DAG_ID], env=env, capture_output=True, text=True)
            elapsed = time.monotonic() - started
            report = [
                line
                for line in (run.stdout + run.stderr).splitlines()
                if " -> job " in line or "Wrote " in line
            ]
            if run.returncode != 0 or not report:
                print(run.stdout[-5000:], run.stderr[-5000:], sep="\n")
                print(f"The demo DAG failed (exit {run.returncode}).")
                return 1
    finally:
        stop(emulator)
    for line in report:
        print("  " + line.split("} INFO - ")[-1].split("[info     ] ")[-1].strip())
    files = sorted(OUTPUT.glob("*.png"))
    print(f"\nDAG {DAG_ID} succeeded in {elapsed:.0f} s; {len(files)} PNGs in {OUTPUT}:")
    for path in files:
        print(f"  {path}  ({path.stat().st_size:,} bytes)")
    return 0 if files else 1


if __name__ == "__main__":
    raise SystemExit(main())
