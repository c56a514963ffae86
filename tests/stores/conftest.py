"""One server per object store for the whole session, on 127.0.0.1, each in its own process group, and
the Airflow connections that reach them (``AIRFLOW_CONN_*``, as a deployment defines them).

* S3: moto's server, with any key pair; a second moto server with its IAM checks on, where an ``admin``
  may do anything and a ``reader`` only read (a folder without write permission, and a second endpoint
  for per-path connections);
* Google Cloud Storage: ``gcp-storage-emulator``, anonymous (it checks no credentials, so it cannot
  express a missing permission);
* Azure Blob: Azurite (``$HITPAW_AZURITE``, which ``make stores`` sets), with the development account's
  key, and a read-only account SAS.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stores import stores as st
from tests.stores.servers import ServerProcess, free_port

# gcsfs (2026.x) otherwise probes every bucket over gRPC for Google's zonal buckets, which an emulator
# does not speak: each first touch of a bucket then waits out a minute of gRPC retries. Set before gcsfs
# is imported, and inherited by the `airflow dags test` runs.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
# The Azure SDK logs every request's headers at INFO.
logging.getLogger("azure").setLevel(logging.WARNING)

BIN = Path(sys.executable).parent
S3_CONN = "hitpaw_s3"
S3_SECOND_CONN = "hitpaw_s3_second"
S3_READONLY_CONN = "hitpaw_s3_readonly"
S3_READONLY_BUCKET = "hitpaw-readonly"
GCS_CONN = "hitpaw_gcs"
AZURE_CONN = "hitpaw_azure"
AZURE_READONLY_CONN = "hitpaw_azure_readonly"
STORE_NAMES = ("s3", "gcs", "azure")


def _start(name: str, command: list[str], port: int, logs: Path) -> ServerProcess:
    return ServerProcess(name, command, port, logs / f"{name}.log").start()


@pytest.fixture(scope="session")
def server_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store-servers")


class ConnectionsEnv:
    """The store connections defined so far: in this process's environment (for the provider's code
    called in-process) until the session ends, and handed to every `airflow dags test` run."""

    def __init__(self) -> None:
        self.variables: dict[str, str] = {}
        self._patch = pytest.MonkeyPatch()

    def define(self, store: st.Store) -> st.Store:
        for variable, value in store.connections.items():
            self._patch.setenv(variable, value)
            self.variables[variable] = value
        return store

    def undo(self) -> None:
        self._patch.undo()


@pytest.fixture(scope="session")
def connections_env() -> Iterator[ConnectionsEnv]:
    env = ConnectionsEnv()
    try:
        yield env
    finally:
        env.undo()


@pytest.fixture(scope="session")
def s3_second(server_logs: Path, connections_env: ConnectionsEnv) -> Iterator[st.Store]:
    """A second S3 endpoint, with IAM checks on: ``hitpaw_s3_second`` may do anything, and
    ``hitpaw_s3_readonly`` may only read the bucket ``hitpaw-readonly``."""
    port = free_port()
    server = _start(
        "moto-iam", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, server_logs
    )
    try:
        keys = st.moto_iam_users(server.url, S3_READONLY_BUCKET)
        store = st.Store(
            name="s3",
            scheme="s3",
            conn_id=S3_SECOND_CONN,
            endpoint=server.url,
            connections={
                st.conn_env_var(S3_SECOND_CONN): st.aws_connection(server.url, *keys["admin"]),
                st.conn_env_var(S3_READONLY_CONN): st.aws_connection(server.url, *keys["reader"]),
            },
            readonly_conn_id=S3_READONLY_CONN,
            readonly_bucket=S3_READONLY_BUCKET,
            raw=st.S3Raw(server.url, *keys["admin"]),
        )
        yield connections_env.define(store)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_store(server_logs: Path, connections_env: ConnectionsEnv, s3_second: st.Store) -> Iterator[st.Store]:
    """moto, any key pair; its read-only connection is the second server's reader (moto's IAM checks are
    server-wide, so they are on only there)."""
    port = free_port()
    server = _start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], port, server_logs)
    try:
        store = st.Store(
            name="s3",
            scheme="s3",
            conn_id=S3_CONN,
            endpoint=server.url,
            connections={st.conn_env_var(S3_CONN): st.aws_connection(server.url)},
            readonly_conn_id=s3_second.readonly_conn_id,
            readonly_bucket=s3_second.readonly_bucket,
            raw=st.S3Raw(server.url),
        )
        yield connections_env.define(store)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def gcs_store(server_logs: Path, connections_env: ConnectionsEnv) -> Iterator[st.Store]:
    port = free_port()
    command = [str(BIN / "gcp-storage-emulator"), "start", "--host", "127.0.0.1", "--port", str(port)]
    server = _start("gcs", [*command, "--in-memory"], port, server_logs)
    try:
        store = st.Store(
            name="gcs",
            scheme="gs",
            conn_id=GCS_CONN,
            endpoint=server.url,
            connections={st.conn_env_var(GCS_CONN): st.gcs_connection(server.url)},
            enforces_conditional_create=False,  # measured: a second ifGenerationMatch=0 write succeeds
            raw=st.GCSRaw(server.url),
        )
        yield connections_env.define(store)
    finally:
        server.stop()


def _azurite() -> str | None:
    given = os.environ.get("HITPAW_AZURITE")
    if given:
        return given
    here = (
        Path(__file__).resolve().parents[2] / "tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    )
    return str(here) if here.exists() else shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azure_store(server_logs: Path, connections_env: ConnectionsEnv) -> Iterator[st.Store]:
    azurite = _azurite()
    if azurite is None:
        pytest.skip("Azurite is not installed (make stores installs it and sets HITPAW_AZURITE)")
    port = free_port()
    workdir = server_logs / "azurite"
    workdir.mkdir(exist_ok=True)
    command = [
        azurite,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
    ]
    server = ServerProcess("azurite", command, port, server_logs / "azurite.log", cwd=workdir).start()
    try:
        full = st.azurite_connection_string(server.url)
        readonly = st.azurite_connection_string(server.url, sas=st.azurite_readonly_sas())
        raw = st.AzureRaw(full)
        raw.make_bucket("hitpaw-readonly")
        store = st.Store(
            name="azure",
            scheme="abfs",
            conn_id=AZURE_CONN,
            endpoint=server.url,
            connections={
                st.conn_env_var(AZURE_CONN): st.wasb_connection(full),
                st.conn_env_var(AZURE_READONLY_CONN): st.wasb_connection(readonly),
            },
            readonly_conn_id=AZURE_READONLY_CONN,
            readonly_bucket="hitpaw-readonly",
            raw=raw,
        )
        yield connections_env.define(store)
    finally:
        server.stop()


@pytest.fixture(params=STORE_NAMES)
def store(request: pytest.FixtureRequest) -> st.Store:
    """Each store in turn."""
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


@pytest.fixture
def all_stores(s3_store: st.Store, gcs_store: st.Store, azure_store: st.Store) -> dict[str, st.Store]:
    return {"s3": s3_store, "gcs": gcs_store, "azure": azure_store}
