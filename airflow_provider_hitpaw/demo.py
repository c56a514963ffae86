"""``hitpaw-demo``: segment sample images with a shipped example DAG, end to end, on this machine.

Starts the local HitPaw emulator, runs ``airflow dags test example_hitpaw_mapped`` (or another shipped
example) against it in a throw-away ``AIRFLOW_HOME``, keeps the cut-outs and masks in ``--output``, prints
what each job cost, and stops the emulator. No key, no coin, nothing of your Airflow touched. Needs the
emulator extra: ``pip install "airflow-provider-hitpaw[emulator]"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEFAULT_DAG = "example_hitpaw_mapped"
SAMPLES = ("shoe.jpg", "portrait.png", "product.webp", "mug.jpg")
EXAMPLES = Path(__file__).resolve().parent / "example_dags"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hitpaw-demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="hitpaw-demo-output", help="where the PNGs go (a folder)")
    parser.add_argument("--dag", default=DEFAULT_DAG, help=f"which shipped example to run ({DEFAULT_DAG})")
    parser.add_argument("--job-seconds", type=float, default=2.0, help="how long each emulated job takes")
    args = parser.parse_args(argv)

    from airflow_provider_hitpaw.emulator.runner import EmulatorServer
    from airflow_provider_hitpaw.testing import run_dag

    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.png", "*.hitpaw.json"):
        for old in output.glob(pattern):
            old.unlink()
    with EmulatorServer(job_seconds=args.job_seconds) as emulator, tempfile.TemporaryDirectory() as inbox:
        # The folder example reads a folder of photos: the emulator's samples, copied into one.
        for name in SAMPLES:
            with urllib.request.urlopen(emulator.sample_url(name), timeout=30) as answer:  # noqa: S310
                Path(inbox, name).write_bytes(answer.read())
        print(f"HitPaw emulator running at {emulator.base_url}")
        print(f"Running `airflow dags test {args.dag}` ...", flush=True)
        started = time.monotonic()
        run = run_dag(
            EXAMPLES,
            args.dag,
            base_url=emulator.base_url,
            api_key=emulator.api_key,
            env={
                "HITPAW_EXAMPLE_SAMPLE_BASE_URL": f"{emulator.base_url}/samples",
                "HITPAW_EXAMPLE_OUTPUT_DIR": f"file://{output}",
                "HITPAW_EXAMPLE_BATCH_OUTPUT_DIR": f"file://{output}",
                "HITPAW_EXAMPLE_OUTPUT_FOLDER": f"file://{output}",
                "HITPAW_EXAMPLE_INPUT_FOLDER": f"file://{inbox}",
            },
        )
        elapsed = time.monotonic() - started
    report = [line for line in run.output.splitlines() if " -> job " in line or "jobs cost" in line]
    if not run.succeeded:
        print(run.output[-6000:])
        print(f"The demo DAG failed (exit {run.returncode}).")
        return 1
    for line in report:
        print("  " + line.split("} INFO - ")[-1].split("[info     ] ")[-1].strip())
    files = sorted(output.glob("*.png"))
    print(f"\nDAG {args.dag} succeeded in {elapsed:.0f} s; {len(files)} PNGs in {output}:")
    for path in files:
        print(f"  {path}  ({path.stat().st_size:,} bytes)")
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
