"""Night 2 of a batch whose results are kept in S3: how many requests, in how long, against the store.

Night 1 segments N images into ``s3://bucket/out`` (a local ``moto_server``, reached through an Airflow AWS
connection) with ``overwrite="skip"``; night 2 runs the same batch over the unchanged catalogue and reuses
every kept pair. Both nights are ``catalogue_nights.py``'s own child (``--child``), so the batch is driven
exactly as there: the operator submits, its trigger waits in the child's event loop, the resumed task
keeps the results. The operator is given the connection as ``output_conn_id="aws_bench"``: given only in
the output's user part (``s3://aws_bench@bucket/out``), it did not reach every object the batch reads and
writes (the kept records were looked for at AWS's own endpoint).

Beside night 2, in the same run and against the same folder: a bare ``s3fs`` listing (``fs.find`` with
details: every key with its size and ETag), and that listing followed by one GET of every record
(``fs.cat`` of the ``.hitpaw.json`` keys), which is what reading the folder once would still need to read.

Requests are counted at the server: moto's request recorder (``/moto-api/recorder/*``) appends one line per
request it receives to a file of ours; it is switched on just before a measured process starts and off once
it has ended, so the figures hold every request of that process (retries included) and nothing else.

    .venv-stores/bin/python benchmarks/store_reuse.py [--images 2000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

import catalogue_nights
from _harness import connection_env, emulator, peak_rss_mib, print_table, run_child

if TYPE_CHECKING:
    from collections.abc import Iterator

BUCKET = "bucket"
FOLDER = "out"
CONN_ID = "aws_bench"
#: What moto accepts (it checks nothing), in the Airflow connection and for the bare s3fs client.
KEY, SECRET, REGION = "test", "test", "us-east-1"
KINDS = ("HEAD object", "GET object", "LIST", "PUT object", "COPY", "DELETE", "other")
#: What a request was about: "hidden" is a name starting with a dot (a ``.partial-``/``.old-`` sibling, or
#: the write check ``storage.check_writable_folder`` puts and removes before paying).
TARGETS = ("record", "cut-out", "mask", "hidden", "folder", "bucket")


# --- the store: moto_server in its own process group, with its request recorder ------------------------


@dataclass
class MotoServer:
    endpoint: str
    recording: Path

    def _recorder(self, action: str) -> None:
        answer = requests.post(f"{self.endpoint}/moto-api/recorder/{action}", timeout=30)
        answer.raise_for_status()

    @contextmanager
    def recorded(self) -> Iterator[list[dict[str, Any]]]:
        """The requests the server receives inside the block, parsed once the block has ended."""
        entries: list[dict[str, Any]] = []
        self._recorder("reset-recording")
        self._recorder("start-recording")
        try:
            yield entries
        finally:
            self._recorder("stop-recording")
        with self.recording.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    raise RuntimeError(
                        f"line {number} of moto's recording is not one request: an entry larger than a "
                        "write buffer (a PUT of a PNG) was interleaved with another; record only processes "
                        "that upload no images"
                    ) from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def moto_server(folder: Path) -> Iterator[MotoServer]:
    """``moto_server`` on a free loopback port, in a process group of its own, stopped (TERM, then KILL)
    by that group whatever happens."""
    port = _free_port()
    recording = folder / "moto-recording.jsonl"
    recording.touch()
    log = (folder / "moto.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MOTO_RECORDER_FILEPATH": str(recording)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=2)
                break
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not start: {(folder / 'moto.log').read_text()}"
                    ) from None
                time.sleep(0.1)
        yield MotoServer(endpoint=endpoint, recording=recording)
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                break
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()


def aws_connection_env(endpoint: str) -> dict[str, str]:
    """The Airflow AWS connection ``aws_bench``: what ``airflow.providers.amazon.aws.fs.s3.get_fs`` reads
    (the login and password as keys, ``endpoint_url`` and ``region_name`` from the extra)."""
    extra = {"endpoint_url": endpoint, "region_name": REGION}
    return {
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
            {"conn_type": "aws", "login": KEY, "password": SECRET, "extra": extra}
        ),
        # Nothing of the machine's own AWS set-up may leak in.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


# --- what a request was ----------------------------------------------------------------------------------


def classify(entry: dict[str, Any]) -> tuple[str, str]:
    """A recorded request as ``(kind, target)``: what it did, and to which of a batch's objects."""
    method = entry["method"].upper()
    parts = urlsplit(entry["url"])
    query = parse_qs(parts.query, keep_blank_values=True)
    headers = {name.lower() for name in entry.get("headers") or {}}
    key = unquote(parts.path).lstrip("/").partition("/")[2]
    if not key:
        target = "bucket"
    elif key.rpartition("/")[2].startswith("."):
        target = "hidden"
    elif key.endswith(".hitpaw.json"):
        target = "record"
    elif key.endswith("_mask.png"):
        target = "mask"
    elif key.endswith(".png"):
        target = "cut-out"
    else:
        target = "folder"
    if method == "GET" and (not key or "list-type" in query or "prefix" in query or "delimiter" in query):
        return "LIST", "folder" if query.get("prefix", [""])[0] else target
    if method == "HEAD":
        return "HEAD object", target
    if method == "GET":
        return "GET object", target
    if method == "PUT":
        return ("COPY" if "x-amz-copy-source" in headers else "PUT object"), target
    if method == "DELETE" or (method == "POST" and "delete" in query):
        return "DELETE", target
    return "other", target


def request_figures(entries: list[dict[str, Any]]) -> tuple[dict[str, Any], Counter[tuple[str, str]]]:
    """The counts of a measured process by kind, and by kind and target (where they come from)."""
    both = Counter(classify(entry) for entry in entries)
    figures: dict[str, Any] = {"requests": len(entries)}
    for kind in KINDS:
        figures[kind] = sum(count for (k, _), count in both.items() if k == kind)
    return figures, both


# --- the measured processes ---------------------------------------------------------------------------


def bare_listing(endpoint: str, read_records: bool) -> dict[str, Any]:
    """In this (fresh) process: the folder listed once with plain s3fs, and with ``read_records`` every
    record read after it. The figures as a dict."""
    import s3fs

    fs = s3fs.S3FileSystem(
        key=KEY, secret=SECRET, endpoint_url=endpoint, client_kwargs={"region_name": REGION}
    )
    started = time.monotonic()
    found = fs.find(f"{BUCKET}/{FOLDER}", detail=True)
    listed_s = time.monotonic() - started
    records = sorted(path for path in found if path.endswith(".hitpaw.json"))
    read_bytes = 0
    if read_records:
        read_bytes = sum(len(body) for body in fs.cat(records).values())
    return {
        "wall_s": time.monotonic() - started,
        "list_s": listed_s,
        "objects": len(found),
        "records": len(records),
        "bytes_of_records_read": read_bytes,
        "peak_rss_mib": peak_rss_mib(),
    }


def create_bucket(endpoint: str) -> None:
    import boto3

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name=REGION
    )
    client.create_bucket(Bucket=BUCKET)


def where_from(title: str, both: Counter[tuple[str, str]], per: int) -> None:
    """The night's requests by kind and target, in all and per input."""
    print(f"\n{title}")
    print(f"{'kind':<14}" + "".join(f"{target:>10}" for target in TARGETS) + f"{'per input':>12}")
    for kind in KINDS:
        counts = [both.get((kind, target), 0) for target in TARGETS]
        if any(counts):
            print(f"{kind:<14}" + "".join(f"{c:>10}" for c in counts) + f"{sum(counts) / per:>12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--job-seconds", type=float, default=1.0)
    parser.add_argument("--smoke", action="store_true", help="5 images: proves the script still works")
    parser.add_argument("--child-listing", nargs=2, metavar=("ENDPOINT", "READ"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_listing:
        endpoint, read = args.child_listing
        print(json.dumps(bare_listing(endpoint, read == "read")))
        return
    images = 5 if args.smoke else args.images
    with (
        tempfile.TemporaryDirectory() as folder,
        moto_server(Path(folder)) as store,
        emulator(job_seconds=args.job_seconds) as server,
    ):
        create_bucket(store.endpoint)
        env = {
            **connection_env(server.base_url),
            **aws_connection_env(store.endpoint),
            "BENCH_CONTROL_TOKEN": server.control_token,
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
        night = [
            catalogue_nights.__file__,
            "--output-conn-id",
            CONN_ID,
            "--child",
            server.base_url,
            str(images),
        ]
        output = f"s3://{BUCKET}/{FOLDER}"
        first = run_child(night[0], [*night[1:], output], env)  # not recorded: its PUTs carry images
        print(
            f"night 1: {images:,} images, {first['coins']:,} coins, {first['submissions']:,} submitted, "
            f"{first['wall_s']:.1f} s",
            flush=True,
        )
        rows: dict[str, dict[str, Any]] = {}
        sources: dict[str, Counter[tuple[str, str]]] = {}
        measured = {
            "night 2": (night[0], [*night[1:], output]),
            "bare listing": (__file__, ["--child-listing", store.endpoint, "list"]),
            "list+GET records": (__file__, ["--child-listing", store.endpoint, "read"]),
        }
        for name, (script, child_args) in measured.items():
            with store.recorded() as entries:
                figures = run_child(script, child_args, env)
            counts, sources[name] = request_figures(entries)
            rows[name] = {**figures, **counts, "requests_per_input": len(entries) / images}
            print(f"{name}: {json.dumps(rows[name])}", flush=True)
    keys = ["requests", *KINDS, "requests_per_input", "wall_s", "peak_rss_mib", "coins", "reused", "objects"]
    keys = [key for key in keys if any(isinstance(row.get(key), int | float) for row in rows.values())]
    print_table(
        f"store_reuse: night 2 over {images:,} inputs kept in S3 (moto), against one listing of the folder",
        {name: rows[name] for name in ("bare listing", "night 2", "list+GET records")},
        keys,
        "bare listing",
    )
    where_from("night 2's requests, by kind and object", sources["night 2"], images)
    second, listing = rows["night 2"], rows["bare listing"]
    pages = math.ceil(listing["objects"] / 1000)
    print(
        f"\nnight 2: coins {second['coins']} (goal 0), reused {second['reused']:,} of {images:,}; "
        f"{second['requests']:,} requests in {second['wall_s']:.2f} s against the listing's "
        f"{listing['requests']} in {listing['wall_s']:.2f} s ({listing['objects']:,} objects, "
        f"{pages} page(s) of 1,000): {second['requests'] / listing['requests']:.0f}x the requests, "
        f"{second['wall_s'] / listing['wall_s']:.0f}x the time"
    )
    if second["coins"] != 0 or second["reused"] != images:  # what --smoke proves in CI (never a timing)
        sys.exit(f"night 2 paid {second['coins']} coins and reused {second['reused']} of {images}")


if __name__ == "__main__":
    main()
