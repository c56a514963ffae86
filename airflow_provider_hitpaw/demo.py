"""``hitpaw-demo``: segment sample images with a shipped example DAG, end to end, on this machine.

Starts the local HitPaw emulator, runs ``airflow dags test example_hitpaw_catalogue`` (or another shipped
example) against it in a throw-away ``AIRFLOW_HOME``: a small catalogue of ``<sku>/main.*`` photos becomes
cut-outs, masks and storefront images under each SKU's folder in ``--output``, with a contact sheet. It
prints what each job cost and stops the emulator. No key, no coin, nothing of your Airflow touched. Needs
the emulator extra: ``pip install "airflow-provider-hitpaw[emulator,finish]"``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEFAULT_DAG = "example_hitpaw_catalogue"
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
    _forget_earlier_demo(output)
    with EmulatorServer(job_seconds=args.job_seconds) as emulator, tempfile.TemporaryDirectory() as inbox:
        # The folder example reads a folder of photos, the catalogue one a folder per SKU: the samples.
        catalogue = Path(inbox, "catalogue")
        for number, name in enumerate(SAMPLES, start=1):
            with urllib.request.urlopen(emulator.sample_url(name), timeout=30) as answer:  # noqa: S310
                photo = answer.read()
            Path(inbox, name).write_bytes(photo)
            sku = catalogue / f"sku-{number:03d}"
            sku.mkdir(parents=True)
            (sku / f"main{Path(name).suffix}").write_bytes(photo)
        # A photo framed too tightly, the product cut by its left edge: the contact sheet shows it first.
        (catalogue / "sku-005").mkdir()
        (catalogue / "sku-005" / "main.jpg").write_bytes(
            _cut_by_the_frame(Path(inbox, SAMPLES[0]).read_bytes())
        )
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
                "HITPAW_EXAMPLE_CATALOGUE": f"file://{catalogue}",
                "HITPAW_EXAMPLE_CATALOGUE_OUTPUT": f"file://{output}",
                "HITPAW_EXAMPLE_PUBLISH_FOLDER": f"file://{output}/shop",
                # Nobody is there to approve the suspects, and `airflow dags test` would wait for them.
                "HITPAW_EXAMPLE_APPROVAL": "off",
            },
        )
        elapsed = time.monotonic() - started
    report = [
        line
        for line in run.output.splitlines()
        if " -> job " in line or "jobs cost" in line or "Suspect: " in line or "Contact sheet: " in line
    ]
    if not run.succeeded:
        print(run.output[-6000:])
        print(f"The demo DAG failed (exit {run.returncode}).")
        return 1
    for line in report:
        print("  " + line.split("} INFO - ")[-1].split("[info     ] ")[-1].strip())
    files = sorted(p for p in output.rglob("*") if p.suffix in _IMAGES and ".hitpaw-" not in str(p))
    print(f"\nDAG {args.dag} succeeded in {elapsed:.0f} s; {len(files)} images in {output}:")
    for path in files:
        print(f"  {path}  ({path.stat().st_size:,} bytes)")
    for sheet in sorted(output.glob(".hitpaw-contact-sheets/**/page-*.jpg")):
        print(f"Contact sheet: {sheet}")
    return 0 if files else 1


_IMAGES = (".png", ".jpg", ".webp")


def _cut_by_the_frame(photo: bytes) -> bytes:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(photo)) as image:
        width, height = image.size
        out = io.BytesIO()
        image.convert("RGB").crop((width * 2 // 5, 0, width, height)).save(out, "JPEG", quality=92)
    return out.getvalue()


def _forget_earlier_demo(output: Path) -> None:
    """What an earlier demo left in ``output`` (its own kinds of file only), so that this one pays again."""
    import shutil

    for path in output.rglob("*"):
        if path.is_file() and (path.suffix in _IMAGES or path.name.endswith(".hitpaw.json")):
            path.unlink()
    for hidden in output.glob(".hitpaw-*"):
        shutil.rmtree(hidden, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
