"""Where the example DAGs find their images and put their results (not a DAG).

The defaults point at the local emulator's sample images (``hitpaw-demo`` and ``make demo`` start one and
set ``HITPAW_EXAMPLE_SAMPLE_BASE_URL``); set ``HITPAW_EXAMPLE_IMAGE_URLS`` (comma separated) to segment your
own images through the real HitPaw.
"""

from __future__ import annotations

import os

SAMPLE_BASE_URL = os.environ.get("HITPAW_EXAMPLE_SAMPLE_BASE_URL", "http://127.0.0.1:8090/samples")
SAMPLE_NAMES = ("shoe.jpg", "portrait.png", "product.webp", "mug.jpg")

IMAGE_URLS: list[str] = [
    url.strip()
    for url in os.environ.get(
        "HITPAW_EXAMPLE_IMAGE_URLS", ",".join(f"{SAMPLE_BASE_URL}/{name}" for name in SAMPLE_NAMES)
    ).split(",")
    if url.strip()
]
#: Where the mapped example keeps cut-outs and masks (an absolute path or any ObjectStoragePath URI).
OUTPUT_DIR = os.environ.get("HITPAW_EXAMPLE_OUTPUT_DIR", "file:///tmp/hitpaw-example/mapped")
#: Where the batch example keeps its cut-outs and masks; a second run finds them there and pays nothing.
BATCH_OUTPUT_DIR = os.environ.get("HITPAW_EXAMPLE_BATCH_OUTPUT_DIR", "file:///tmp/hitpaw-example/batch")
#: For the folder example: where the images are, and where their cut-outs go (any ObjectStoragePath URI).
INPUT_FOLDER = os.environ.get("HITPAW_EXAMPLE_INPUT_FOLDER", "file:///tmp/hitpaw-example/in")
OUTPUT_FOLDER = os.environ.get("HITPAW_EXAMPLE_OUTPUT_FOLDER", "file:///tmp/hitpaw-example/out")
#: For the catalogue example: a folder of ``<sku>/main.*`` photos, and where the storefront images go.
CATALOGUE_FOLDER = os.environ.get("HITPAW_EXAMPLE_CATALOGUE", "file:///tmp/hitpaw-example/catalogue")
CATALOGUE_OUTPUT = os.environ.get("HITPAW_EXAMPLE_CATALOGUE_OUTPUT", "file:///tmp/hitpaw-example/storefront")
#: Where the catalogue example publishes its storefront images, and how long a person has to approve.
PUBLISH_FOLDER = os.environ.get("HITPAW_EXAMPLE_PUBLISH_FOLDER", "file:///tmp/hitpaw-example/shop")
APPROVAL_HOURS = float(os.environ.get("HITPAW_EXAMPLE_APPROVAL_HOURS", "24"))
#: "off" leaves the approval out (``airflow dags test`` runs no scheduler to end an unanswered one).
APPROVAL = os.environ.get("HITPAW_EXAMPLE_APPROVAL", "on")
