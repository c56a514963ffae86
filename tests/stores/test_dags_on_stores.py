"""End to end under ``airflow dags test``, against the HitPaw emulator, with inputs and results in S3, GCS
and Azure Blob at once: the emulator's books (jobs, uploads, coins) say what was paid for.

One DAG run covers every store (``dags/hitpaw_stores.py`` builds its tasks from a spec), so that the
suite pays Airflow's start-up once per night, not once per store.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_hitpaw._kept import record_name
from airflow_provider_hitpaw.storage import result_names
from airflow_provider_hitpaw.testing import DagTestRun, run_dag
from tests.integration.catalogue import unique_copy
from tests.stores.conftest import ConnectionsEnv
from tests.stores.stores import Store

DAG_FILE = Path(__file__).parent / "dags" / "hitpaw_stores.py"
PRODUCTS = ("sku-1", "sku-2", "sku-3")


@dataclass(frozen=True)
class Books:
    """What the emulator counted: jobs created, files uploaded to its OSS, coins left."""

    jobs: list[dict[str, Any]]
    uploads: int
    coins: int

    @classmethod
    def of(cls, emulator: Any) -> Books:
        state = emulator.state()
        return cls(list(state["jobs"]), int(state["uploads"]), int(state["coins"]))

    def since(self, earlier: Books) -> Books:
        """What happened after ``earlier``: the new jobs, uploads and coins spent."""
        known = {job["job_id"] for job in earlier.jobs}
        return Books(
            [job for job in self.jobs if job["job_id"] not in known],
            self.uploads - earlier.uploads,
            earlier.coins - self.coins,
        )


def path_spec(store: Store, bucket: str, key: str, conn_id: str | None = None) -> dict[str, str]:
    return {"uri": store.uri(bucket, key), "conn_id": conn_id or store.conn_id}


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Airflow home (its database migrated once) for every DAG run of the suite."""
    return tmp_path_factory.mktemp("airflow-stores")


def run_spec(
    emulator: Any, home: Path, env: ConnectionsEnv, spec: dict[str, Any], report: Path
) -> tuple[DagTestRun, dict[str, Any]]:
    """Run the spec's DAG once against the emulator; what ``airflow dags test`` printed, and the report
    task's file."""
    report.unlink(missing_ok=True)
    spec = {**spec, "report": str(report)}
    run = run_dag(
        DAG_FILE,
        spec["dag_id"],
        base_url=emulator.base_url,
        api_key=emulator.api_key,
        airflow_home=home,
        env={
            **env.variables,
            "HITPAW_STORES_SPEC": json.dumps(spec),
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        },
    )
    (report.parent / f"{spec['dag_id']}.log").write_text(run.output)  # to read after a failure
    assert report.exists(), f"the report task did not run:\n{run.output[-8000:]}"
    # Neither the API key nor a store's signature reaches what the run printed (its task logs included).
    assert emulator.api_key not in run.output
    assert not re.search(r"(?i)\bsig=(?!REDACTED)[^&\s'\"]{8,}", run.output)
    return run, json.loads(report.read_text())


@pytest.fixture
def photo(hitpaw_emulator: Any) -> bytes:
    return requests.get(hitpaw_emulator.sample_url("shoe.jpg"), timeout=10).content


def test_nights_on_every_store_pay_once_per_picture(
    hitpaw_emulator: Any,
    airflow_home: Path,
    all_stores: dict[str, Store],
    s3_second: Store,
    connections_env: ConnectionsEnv,
    photo: bytes,
    tmp_path: Path,
) -> None:
    """Night 1 pays for every input; night 2 for none (no upload, no coin); after one object per store
    is edited (a new version, a new ETag), night 3 pays for exactly those. Also in the same run: a batch
    whose inputs come from two S3 endpoints and whose output is on the second, each path with its own
    connection; and links that lead nowhere rather than to a wrong console."""
    tasks: list[dict[str, Any]] = []
    placed: dict[str, tuple[Store, str]] = {}
    n = 0
    for name, store in all_stores.items():
        bucket = store.new_bucket(name)
        placed[name] = (store, bucket)
        sources = []
        for product in PRODUCTS:
            n += 1
            store.put(bucket, f"in/{product}/main.jpg", unique_copy(photo, ".jpg", n))
            sources.append(path_spec(store, bucket, f"in/{product}/main.jpg"))
        n += 1
        store.put(bucket, "in/hero.jpg", unique_copy(photo, ".jpg", n))
        tasks.append(
            {
                "kind": "batch",
                "task_id": f"{name}_batch",
                "sources": sources,
                "output": path_spec(store, bucket, "out"),
            }
        )
        tasks.append(
            {
                "kind": "single",
                "task_id": f"{name}_single",
                "source": path_spec(store, bucket, "in/hero.jpg"),
                "output": path_spec(store, bucket, "single"),
            }
        )
    # Per-path connections: one input on each S3 endpoint, the results on the second.
    s3, s3_bucket = placed["s3"]
    second_bucket = s3_second.new_bucket("second")
    s3_second.put(second_bucket, "in/other.jpg", unique_copy(photo, ".jpg", 100))
    tasks.append(
        {
            "kind": "batch",
            "task_id": "two_endpoints",
            "sources": [
                path_spec(s3, s3_bucket, "in/sku-1/main.jpg"),
                path_spec(s3_second, second_bucket, "in/other.jpg"),
            ],
            "output": path_spec(s3_second, second_bucket, "kept"),
        }
    )
    spec = {"dag_id": "hitpaw_stores_nights", "tasks": tasks}
    report = tmp_path / "report.json"
    images = len(all_stores) * (len(PRODUCTS) + 1) + 2

    def night() -> tuple[Books, dict[str, Any]]:
        before = Books.of(hitpaw_emulator)
        run, done = run_spec(hitpaw_emulator, airflow_home, connections_env, spec, report)
        run.raise_for_failure()
        assert {task: value["state"] for task, value in done.items()} == dict.fromkeys(done, "success")
        return Books.of(hitpaw_emulator).since(before), done

    first, done = night()
    assert (len(first.jobs), first.uploads, first.coins) == (images, images, 20 * images)
    for name, (store, bucket) in placed.items():
        results = done[f"{name}_batch"]["result"]
        assert [r["reused"] for r in results] == [False] * len(PRODUCTS), name
        kept = store.keys(bucket, "out/")
        for product in PRODUCTS:
            cutout, mask = result_names(store.uri(bucket, f"in/{product}/main.jpg"))
            assert {f"out/{cutout}", f"out/{mask}", f"out/{record_name(cutout)}"} <= set(kept), (name, kept)
        assert not [key for key in kept if "/." in key], f"{name}: a hidden partial was left: {kept}"
        # A custom endpoint (an emulator, MinIO, ...) has no console: nothing, rather than AWS's or Google's.
        assert done[f"{name}_batch"]["links"] == {"folder": "", "contact_sheet": ""}, name
    two = done["two_endpoints"]["result"]
    assert [r["status"] for r in two] == ["COMPLETED", "COMPLETED"]
    assert all(r["res_path"].startswith(f"s3://{second_bucket}/kept/") for r in two)
    assert len(s3_second.keys(second_bucket, "kept/")) == 6

    second, done = night()
    assert (len(second.jobs), second.uploads, second.coins) == (0, 0, 0), "the second night paid"
    for name in placed:
        assert all(r["reused"] and r["consume_coins"] == 0 for r in done[f"{name}_batch"]["result"]), name
        assert done[f"{name}_single"]["result"]["reused"] is True, name

    edited: dict[str, str] = {}
    for name, (store, bucket) in placed.items():
        store.put(bucket, "in/sku-2/main.jpg", unique_copy(photo, ".jpg", 1000))  # a new version
        edited[name] = store.uri(bucket, "in/sku-2/main.jpg")
    third, done = night()
    assert (len(third.jobs), third.uploads, third.coins) == (len(placed), len(placed), 20 * len(placed))
    for name in placed:
        fresh = [r["source_path"] for r in done[f"{name}_batch"]["result"] if not r["reused"]]
        assert [re.sub(r"//[^@/]+@", "//", path) for path in fresh] == [edited[name]], name
        assert done[f"{name}_single"]["result"]["reused"] is True, name
    assert all(r["reused"] for r in done["two_endpoints"]["result"])


#: What each store says of a bucket (container) that is not there, as the provider's errors quote it.
MISSING_BUCKET_WORDS = {
    "s3": "The specified bucket does not exist",
    "gcs": "FileNotFoundError",  # gcsfs says no more than the URL of the 404
    "azure": "The specified container does not exist",
}
#: What each store says to a connection that may not write (None: the emulator cannot express it).
NO_WRITE_WORDS = {"s3": "Access Denied", "gcs": None, "azure": "AuthorizationPermissionMismatch"}


def test_what_cannot_work_is_refused_before_any_upload_or_coin(
    hitpaw_emulator: Any,
    airflow_home: Path,
    all_stores: dict[str, Store],
    connections_env: ConnectionsEnv,
    photo: bytes,
    tmp_path: Path,
) -> None:
    """A missing source object, a source in a missing bucket, an output in a missing bucket (a batch and
    a single image) and an output the connection may not write to: every task fails before anything is
    uploaded or paid for, quoting the store. A task that only submits, and the failed ones, leave their
    links a value: no "XCom not found" error is logged for them."""
    tasks: list[dict[str, Any]] = []
    expected: dict[str, list[str]] = {}
    for name, store in all_stores.items():
        bucket = store.new_bucket(name)
        store.put(bucket, "in/ok.jpg", photo)
        ok = path_spec(store, bucket, "in/ok.jpg")
        out = path_spec(store, bucket, "out")
        gone = f"gone-{bucket}"
        missing_object = store.uri(bucket, "in/missing.jpg")
        missing_bucket_source = store.uri(gone, "in/a.jpg")
        cases: list[tuple[dict[str, Any], list[str]]] = [
            (
                {"kind": "batch", "sources": [ok, path_spec(store, bucket, "in/missing.jpg")], "output": out},
                [f"there is no file at {missing_object}"],
            ),
            (
                {"kind": "batch", "sources": [path_spec(store, gone, "in/a.jpg")], "output": out},
                [f"there is no file at {missing_bucket_source}", f"{gone!r} does not exist"],
            ),
            (
                {"kind": "batch", "sources": [ok], "output": path_spec(store, gone, "out")},
                [f"{store.uri(gone, 'out')} cannot take the results", MISSING_BUCKET_WORDS[name]],
            ),
            (
                {"kind": "single", "source": ok, "output": path_spec(store, gone, "single")},
                [f"{store.uri(gone, 'single')} cannot take the results", MISSING_BUCKET_WORDS[name]],
            ),
        ]
        if store.readonly_conn_id is not None and store.readonly_bucket is not None:
            readonly = path_spec(store, store.readonly_bucket, "out", store.readonly_conn_id)
            words = NO_WRITE_WORDS[name]
            assert words is not None
            cases.append(
                (
                    {"kind": "batch", "sources": [ok], "output": readonly},
                    [f"{store.uri(store.readonly_bucket, 'out')} cannot take the results", words],
                )
            )
        for number, (task, said) in enumerate(cases):
            task_id = f"{name}_refused_{number}"
            tasks.append({**task, "task_id": task_id})
            expected[task_id] = said
    submit_only = hitpaw_emulator.sample_url("mug.jpg")
    tasks.append({"kind": "submit_only", "task_id": "submit_only", "file_url": submit_only})
    spec = {"dag_id": "hitpaw_stores_refusals", "tasks": tasks, "read_links": False}

    before = Books.of(hitpaw_emulator)
    run, done = run_spec(hitpaw_emulator, airflow_home, connections_env, spec, tmp_path / "report.json")
    spent = Books.of(hitpaw_emulator).since(before)

    assert [job["file_url"] for job in spent.jobs] == [submit_only], "a refused task paid"
    assert spent.uploads == 0, "a refused task uploaded"
    assert done["submit_only"]["state"] == "success"
    for task_id, said in expected.items():
        assert done[task_id]["state"] == "failed", task_id
        for words in said:
            assert words in run.output, f"{task_id}: {words!r} not in the log"
    missing_links = [
        line for line in run.output.splitlines() if "XCom not found" in line and "hitpaw_links" in line
    ]
    assert not missing_links, missing_links[:3]
