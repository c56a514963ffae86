"""storage: result names, persisting results (atomically, streamed, without the key), reading inputs.

Downloads come from a real HTTP server on 127.0.0.1 (``http.server`` in a thread), so streaming, a body cut
short and a connection dropped mid-stream are the real thing, not mocks.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from airflow_provider_hitpaw import _api, storage
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawConnectionError,
    HitPawError,
    HitPawInvalidRequestError,
    HitPawResponseError,
    HitPawServerError,
)
from airflow_provider_hitpaw.storage import (
    PNG_SIGNATURE,
    as_storage_path,
    open_source,
    persist_job_results,
    persist_result,
    read_source,
    result_names,
    storage_uri,
)
from airflow_provider_hitpaw.validation import OVERWRITE_POLICIES
from tests.conftest import SECRET_KEY

ONE_TRY = _api.RetryPolicy(max_attempts=1)
FAST_RETRIES = _api.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
SMALL_PNG = PNG_SIGNATURE + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
MASK_PNG = PNG_SIGNATURE + b"mask" * 300
MIB = 1024 * 1024


# --- a local HTTP server --------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files: ClassVar[dict[str, bytes]] = {}
    seen_headers: ClassVar[list[dict[str, str]]] = []
    hits: ClassVar[dict[str, int]] = {}
    block: ClassVar[bytes] = b"\x00" * MIB

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, content_type: str = "image/png") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        Handler.seen_headers.append(dict(self.headers))
        Handler.hits[path] = Handler.hits.get(path, 0) + 1
        if path.startswith("/files/"):
            data = Handler.files.get(path.removeprefix("/files/"))
            if data is None:
                self._send(404, b"not found", "text/plain")
            else:
                self._send(200, data)
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[-1]), b"<html>nope</html>", "text/html")
        elif path == "/not-png.png":
            self._send(200, b"<html>a login page, not an image</html>", "text/html")
        elif path == "/tiny.png":
            self._send(200, b"\x89P")
        elif path == "/big.png":
            size = int(self.path.split("size=", 1)[1])
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(PNG_SIGNATURE)
            left = size - len(PNG_SIGNATURE)
            while left > 0:
                n = min(left, len(Handler.block))
                self.wfile.write(Handler.block[:n] if n < len(Handler.block) else Handler.block)
                left -= n
        elif path == "/short.png":
            # Promises 100 kB, sends 50 kB, hangs up.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(100_000))
            self.end_headers()
            self.wfile.write(PNG_SIGNATURE + b"x" * (50_000 - len(PNG_SIGNATURE)))
            self.wfile.flush()
            self.close_connection = True
        elif path == "/drop.png":
            # Chunked, then the connection drops before the last chunk.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (PNG_SIGNATURE + b"a" * 1000, b"b" * 4000):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
            self.close_connection = True
        elif path == "/flaky.png":
            if Handler.hits[path] == 1:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, SMALL_PNG)
        else:
            self._send(404, b"", "text/plain")


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(http_server: str) -> str:
    Handler.files.clear()
    Handler.files["cutout.png"] = SMALL_PNG
    Handler.files["mask.png"] = MASK_PNG
    Handler.seen_headers.clear()
    Handler.hits.clear()
    return http_server


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A ``memory://`` root, attached the way each Airflow version attaches a filesystem."""
    from fsspec.implementations.memory import MemoryFileSystem

    try:
        from airflow.sdk.io import attach
    except ImportError:  # Airflow 2
        from airflow.io.store import attach  # type: ignore[no-redef]

    attach(protocol="memory", fs=MemoryFileSystem())
    bucket = f"hitpaw-test-{uuid.uuid4().hex[:8]}"
    yield f"memory://{bucket}"
    fs = MemoryFileSystem()
    if fs.exists(f"/{bucket}"):
        fs.rm(f"/{bucket}", recursive=True)


def local_names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


def target_in(directory: Path, name: str = "shoe.png") -> Any:
    return as_storage_path(str(directory)) / name


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("shoe-042.jpg", "shoe-042"),
        ("https://cdn.example.com/shoes/2026/shoe-042.jpg", "shoe-042"),
        ("https://cdn.example.com/shoes/shoe-042.jpg?width=800&sig=abc#top", "shoe-042"),
        ("https://cdn.example.com/a%20b%2Fc.png", "c"),  # %2F decodes to a separator: the last part wins
        ("https://cdn.example.com/my%20photo.webp", "my_photo"),
        ("s3://bucket/inputs/portrait.PNG", "portrait"),
        ("gs://bucket/deep/path/item.v2.jpeg", "item.v2"),
        ("/data/in/shoe.jpg", "shoe"),
        ("relative/dir/shoe.jpg", "shoe"),
        ("C:\\images\\shoe.jpg", "shoe"),
        ("file:///data/in/shoe.jpg", "shoe"),
        ("https://cdn.example.com/image?id=42", "image"),
        ("photo:1<2>|?*.jpg", "photo_1_2_"),
        ("../../etc/passwd", "passwd"),
        ("..jpg", "job-123"),
        ("produit-été.jpg", "produit-été"),
        ("-dash.jpg", "dash"),
    ],
)
def test_result_names(source: str, expected: str) -> None:
    assert result_names(source, "job-123") == (f"{expected}.png", f"{expected}_mask.png")


@pytest.mark.parametrize(
    "source",
    [
        "https://cdn.example.com/",
        "https://cdn.example.com",
        "s3://bucket",
        "",
        ".jpg",
        "???.png",
        "/data/in/",
    ],
)
def test_result_names_fall_back_to_the_job_id(source: str) -> None:
    assert result_names(source, "f5007c0b-e902-4070") == (
        "f5007c0b-e902-4070.png",
        "f5007c0b-e902-4070_mask.png",
    )


def test_result_names_sanitise_the_job_id_too() -> None:
    assert result_names("", "a/b c") == ("a_b_c.png", "a_b_c_mask.png")
    assert result_names("", "///") == ("result.png", "result_mask.png")


def test_result_names_are_never_hidden_or_traversing() -> None:
    for source in ["https://x/..png", "https://x/.hidden.jpg", "/a/../..", "..", "."]:
        name, _mask = result_names(source, "job")
        assert not name.startswith(".")
        assert "/" not in name
        assert "\\" not in name


# --- paths ---------------------------------------------------------------------------------------------


def test_as_storage_path_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert storage_uri(as_storage_path("/data/out")) == "file:///data/out"
    monkeypatch.chdir(tmp_path)
    assert storage_uri(as_storage_path("rel/out")) == f"file://{tmp_path}/rel/out"
    assert storage_uri(as_storage_path(tmp_path)) == f"file://{tmp_path}"
    assert storage_uri(as_storage_path(f"file://{tmp_path}/x")) == f"file://{tmp_path}/x"


def test_as_storage_path_keeps_a_path_object() -> None:
    path = as_storage_path("/data/out")
    assert as_storage_path(path) is path


def test_as_storage_path_object_store_uri_with_conn_id() -> None:
    path = as_storage_path("s3://bucket/prefix", conn_id="aws_test") if _has_s3() else None
    if path is None:
        pytest.skip("no s3 filesystem installed")
    assert storage_uri(path) == "s3://bucket/prefix"


def _has_s3() -> bool:
    try:
        as_storage_path("s3://bucket/x")
    except HitPawConfigurationError:
        return False
    return True


@pytest.mark.parametrize("value", ["", "   ", None, 42])
def test_as_storage_path_refuses_nothing(value: Any) -> None:
    with pytest.raises(HitPawConfigurationError) as excinfo:
        as_storage_path(value, field="output_path")
    assert excinfo.value.field == "output_path"


def test_as_storage_path_refuses_unknown_schemes() -> None:
    with pytest.raises(HitPawConfigurationError) as excinfo:
        as_storage_path("nosuchfs://bucket/x", field="source_path")
    assert excinfo.value.field == "source_path"


def test_storage_uri_of_memory(memory_root: str) -> None:
    assert storage_uri(as_storage_path(f"{memory_root}/a.png")) == f"{memory_root}/a.png"


# --- persist_result -------------------------------------------------------------------------------------


def test_persist_to_a_local_directory(server: str, out_dir: Path) -> None:
    target = persist_result(f"{server}/files/cutout.png", target_in(out_dir), retry_policy=ONE_TRY)
    assert (out_dir / "shoe.png").read_bytes() == SMALL_PNG
    assert storage_uri(target) == f"file://{out_dir}/shoe.png"
    assert local_names(out_dir) == ["shoe.png"]


def test_persist_to_memory(server: str, memory_root: str) -> None:
    target = as_storage_path(f"{memory_root}/cutouts/2026-03-25") / "shoe.png"
    persist_result(f"{server}/files/cutout.png", target, retry_policy=ONE_TRY)
    assert target.read_bytes() == SMALL_PNG
    siblings = [p.name for p in as_storage_path(f"{memory_root}/cutouts/2026-03-25").iterdir()]
    assert siblings == ["shoe.png"]


def test_overwrite_replaces(server: str, out_dir: Path) -> None:
    out_dir.mkdir()
    (out_dir / "shoe.png").write_bytes(b"old")
    persist_result(
        f"{server}/files/cutout.png", target_in(out_dir), overwrite="overwrite", retry_policy=ONE_TRY
    )
    assert (out_dir / "shoe.png").read_bytes() == SMALL_PNG


def test_skip_keeps_the_existing_file_and_downloads_nothing(server: str, out_dir: Path) -> None:
    out_dir.mkdir()
    (out_dir / "shoe.png").write_bytes(b"old")
    target = persist_result(f"{server}/files/cutout.png", target_in(out_dir), overwrite="skip")
    assert (out_dir / "shoe.png").read_bytes() == b"old"
    assert storage_uri(target) == f"file://{out_dir}/shoe.png"
    assert Handler.hits == {}


def test_skip_writes_when_nothing_is_there(server: str, out_dir: Path) -> None:
    persist_result(f"{server}/files/cutout.png", target_in(out_dir), overwrite="skip")
    assert (out_dir / "shoe.png").read_bytes() == SMALL_PNG


def test_fail_refuses_an_existing_file(server: str, out_dir: Path) -> None:
    out_dir.mkdir()
    (out_dir / "shoe.png").write_bytes(b"old")
    with pytest.raises(HitPawConfigurationError) as excinfo:
        persist_result(f"{server}/files/cutout.png", target_in(out_dir), overwrite="fail")
    assert excinfo.value.field == "output_path"
    assert "already exists" in str(excinfo.value)
    assert (out_dir / "shoe.png").read_bytes() == b"old"
    assert Handler.hits == {}


def test_fail_writes_when_nothing_is_there(server: str, memory_root: str) -> None:
    target = as_storage_path(memory_root) / "shoe.png"
    persist_result(f"{server}/files/cutout.png", target, overwrite="fail")
    assert target.read_bytes() == SMALL_PNG
    with pytest.raises(HitPawConfigurationError):
        persist_result(f"{server}/files/cutout.png", target, overwrite="fail")


@pytest.mark.parametrize("overwrite", ["replace", "", None, True])
def test_unknown_overwrite_policy(server: str, out_dir: Path, overwrite: Any) -> None:
    with pytest.raises(HitPawConfigurationError) as excinfo:
        persist_result(f"{server}/files/cutout.png", target_in(out_dir), overwrite=overwrite)
    assert excinfo.value.field == "overwrite"
    assert OVERWRITE_POLICIES == ("overwrite", "skip", "fail")


def test_url_must_be_http(out_dir: Path) -> None:
    with pytest.raises(HitPawConfigurationError):
        persist_result("file:///etc/passwd", target_in(out_dir))


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/status/500", HitPawServerError),
        ("/status/503", HitPawServerError),
        ("/status/403", HitPawAuthenticationError),
        ("/status/404", HitPawInvalidRequestError),
        ("/not-png.png", HitPawResponseError),
        ("/tiny.png", HitPawResponseError),
        ("/short.png", HitPawError),
        ("/drop.png", HitPawConnectionError),
    ],
)
@pytest.mark.parametrize("existing", [False, True])
def test_failed_download_leaves_no_file(
    server: str, out_dir: Path, path: str, family: type[HitPawError], existing: bool
) -> None:
    out_dir.mkdir()
    if existing:
        (out_dir / "shoe.png").write_bytes(b"previous result")
    with pytest.raises(family):
        persist_result(f"{server}{path}?token=sig", target_in(out_dir), retry_policy=ONE_TRY)
    # Neither a partial file nor a half-written result: the directory is as it was.
    assert local_names(out_dir) == (["shoe.png"] if existing else [])
    if existing:
        assert (out_dir / "shoe.png").read_bytes() == b"previous result"


@pytest.mark.parametrize("path", ["/status/500", "/not-png.png", "/short.png", "/drop.png"])
def test_failed_download_leaves_no_object_in_memory(server: str, memory_root: str, path: str) -> None:
    directory = as_storage_path(memory_root) / "out"
    with pytest.raises(HitPawError):
        persist_result(f"{server}{path}", directory / "shoe.png", retry_policy=ONE_TRY)
    assert not (directory / "shoe.png").exists()
    assert list(directory.iterdir()) == [] if directory.exists() else True


def test_short_body_is_reported(server: str, out_dir: Path) -> None:
    with pytest.raises(HitPawError) as excinfo:
        persist_result(f"{server}/short.png", target_in(out_dir), retry_policy=ONE_TRY)
    assert excinfo.value.retryable


def test_length_check_of_our_own(server: str, out_dir: Path, mocker: Any) -> None:
    """Even where the transport does not enforce Content-Length, a body shorter than it is refused."""
    mocker.patch.object(storage, "_expected_length", return_value=len(SMALL_PNG) + 10)
    with pytest.raises(HitPawResponseError, match="Content-Length"):
        persist_result(f"{server}/files/cutout.png", target_in(out_dir), retry_policy=ONE_TRY)
    assert local_names(out_dir) == []


def test_error_messages_do_not_quote_the_query(server: str, out_dir: Path) -> None:
    for path in ("/status/500", "/drop.png"):
        with pytest.raises(HitPawError) as excinfo:
            persist_result(
                f"{server}{path}?Signature=SIGNED-SECRET", target_in(out_dir), retry_policy=ONE_TRY
            )
        assert "SIGNED-SECRET" not in str(excinfo.value)


def test_transient_faults_are_retried(server: str, out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    delays: list[float] = []
    monkeypatch.setattr(storage, "_pause", delays.append)
    persist_result(f"{server}/flaky.png", target_in(out_dir), retry_policy=FAST_RETRIES)
    assert (out_dir / "shoe.png").read_bytes() == SMALL_PNG
    assert Handler.hits["/flaky.png"] == 2
    assert len(delays) == 1
    assert local_names(out_dir) == ["shoe.png"]


def test_permanent_faults_are_not_retried(
    server: str, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage, "_pause", lambda _: None)
    with pytest.raises(HitPawInvalidRequestError):
        persist_result(f"{server}/status/404", target_in(out_dir), retry_policy=FAST_RETRIES)
    assert Handler.hits["/status/404"] == 1


def test_no_api_key_is_sent_even_on_the_hooks_session(server: str, out_dir: Path) -> None:
    session = requests.Session()
    session.headers.update(_api.request_headers(SECRET_KEY))
    persist_result(f"{server}/files/cutout.png", target_in(out_dir), session=session)
    persist_result(f"{server}/files/mask.png", target_in(out_dir, "m.png"))
    assert len(Handler.seen_headers) == 2
    for headers in Handler.seen_headers:
        assert "apikey" not in {name.lower() for name in headers}
        assert SECRET_KEY not in json.dumps(headers)
    assert session.headers["Apikey"] == SECRET_KEY  # the caller's session is not changed


def test_a_large_download_streams_in_bounded_memory(server: str, out_dir: Path) -> None:
    size = 50 * MIB
    target = target_in(out_dir)
    # Warm up outside the measurement: first imports and the filesystem's set-up are no part of a copy.
    persist_result(f"{server}/files/cutout.png", target_in(out_dir, "warm-up.png"), retry_policy=ONE_TRY)
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        persist_result(f"{server}/big.png?size={size}", target, retry_policy=ONE_TRY)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (out_dir / "shoe.png").stat().st_size == size
    with (out_dir / "shoe.png").open("rb") as stream:
        assert stream.read(8) == PNG_SIGNATURE
    # The server thread's allocations count too; a copy held in memory would be 50 MiB on its own.
    assert peak < 10 * MIB, f"peak {peak / MIB:.1f} MiB for a {size / MIB:.0f} MiB file"


# --- persist_job_results ---------------------------------------------------------------------------------


def completed(server: str, job_id: str = "f5007c0b") -> dict[str, Any]:
    return {
        "job_id": job_id,
        "status": "COMPLETED",
        "res_url": f"{server}/files/cutout.png",
        "mask_url": f"{server}/files/mask.png",
        "original_url": "https://cdn.example.com/shoe-042.jpg",
    }


def test_persist_job_results_local(server: str, out_dir: Path) -> None:
    paths = persist_job_results(completed(server), "https://cdn.example.com/shoe-042.jpg?w=1", str(out_dir))
    assert paths == {
        "res_path": f"file://{out_dir}/shoe-042.png",
        "mask_path": f"file://{out_dir}/shoe-042_mask.png",
    }
    assert (out_dir / "shoe-042.png").read_bytes() == SMALL_PNG
    assert (out_dir / "shoe-042_mask.png").read_bytes() == MASK_PNG
    json.dumps(paths)  # fit for XCom


def test_persist_job_results_memory_with_task_status(server: str, memory_root: str) -> None:
    status = _api.TaskStatus(**{k: v for k, v in completed(server).items()})
    paths = persist_job_results(status, "s3://in/portrait.png", f"{memory_root}/out/")
    assert paths == {
        "res_path": f"{memory_root}/out/portrait.png",
        "mask_path": f"{memory_root}/out/portrait_mask.png",
    }
    assert as_storage_path(paths["mask_path"]).read_bytes() == MASK_PNG


def test_persist_job_results_named_after_the_job_without_a_name(server: str, out_dir: Path) -> None:
    paths = persist_job_results(completed(server, "job-77"), "https://cdn.example.com/", out_dir.as_posix())
    assert paths["res_path"].endswith("/job-77.png")
    assert paths["mask_path"].endswith("/job-77_mask.png")


def test_persist_job_results_skip_and_fail(server: str, out_dir: Path) -> None:
    out_dir.mkdir()
    (out_dir / "shoe.png").write_bytes(b"old")
    persist_job_results(completed(server), "shoe.jpg", str(out_dir), overwrite="skip")
    assert (out_dir / "shoe.png").read_bytes() == b"old"
    assert (out_dir / "shoe_mask.png").read_bytes() == MASK_PNG
    with pytest.raises(HitPawConfigurationError) as excinfo:
        persist_job_results(completed(server), "shoe.jpg", str(out_dir), overwrite="fail")
    assert excinfo.value.field == "output_path"


def test_persist_job_results_checks_overwrite_before_anything(server: str, out_dir: Path) -> None:
    with pytest.raises(HitPawConfigurationError):
        persist_job_results(completed(server), "shoe.jpg", str(out_dir), overwrite="sometimes")
    assert Handler.hits == {}


@pytest.mark.parametrize("missing", ["res_url", "mask_url"])
def test_persist_job_results_needs_both_urls(server: str, out_dir: Path, missing: str) -> None:
    status = completed(server)
    status[missing] = None
    with pytest.raises(HitPawResponseError, match=missing):
        persist_job_results(status, "shoe.jpg", str(out_dir))
    assert local_names(out_dir) == []


# --- inputs ----------------------------------------------------------------------------------------------

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"j" * 100
PNG = PNG_SIGNATURE + b"p" * 100
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"w" * 100


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("shoe.jpg", JPEG, "image/jpeg"),
        ("a.JPEG", JPEG, "image/jpeg"),
        ("p.png", PNG, "image/png"),
        ("w.webp", WEBP, "image/webp"),
    ],
)
def test_read_source(tmp_path: Path, name: str, data: bytes, content_type: str) -> None:
    (tmp_path / name).write_bytes(data)
    assert read_source(str(tmp_path / name)) == (name, content_type, len(data))
    assert read_source(f"file://{tmp_path}/{name}") == (name, content_type, len(data))


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("png-named.jpg", PNG, "image/png"),
        ("jpeg-named.webp", JPEG, "image/jpeg"),
        ("anim.gif", b"GIF89a....", ".gif"),
        ("scan.bmp", b"BM......", ".bmp"),
        ("noext", JPEG, "no extension"),
        ("text.png", b"hello, not an image", "does not start like"),
        ("empty.jpg", b"", "empty"),
    ],
)
def test_read_source_refuses(tmp_path: Path, name: str, data: bytes, problem: str) -> None:
    (tmp_path / name).write_bytes(data)
    with pytest.raises(HitPawConfigurationError) as excinfo:
        read_source(str(tmp_path / name))
    assert excinfo.value.field == "source_path"
    assert problem in str(excinfo.value)


def test_read_source_missing_or_directory(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.jpg", tmp_path):
        with pytest.raises(HitPawConfigurationError) as excinfo:
            read_source(str(path) if path != tmp_path else str(tmp_path / "dir.jpg"))
        assert excinfo.value.field == "source_path"
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(HitPawConfigurationError, match="no file"):
        read_source(str(tmp_path / "dir.jpg"))


def test_read_and_open_source_in_memory(memory_root: str) -> None:
    path = as_storage_path(f"{memory_root}/in/shoe.jpg")
    with path.open("wb") as stream:
        stream.write(JPEG)
    assert read_source(path) == ("shoe.jpg", "image/jpeg", len(JPEG))
    with open_source(f"{memory_root}/in/shoe.jpg") as stream:
        assert stream.read() == JPEG


def test_open_source_streams(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(PNG_SIGNATURE + b"\x00" * (3 * MIB))
    with open_source(str(tmp_path / "big.png")) as stream:
        assert stream.read(8) == PNG_SIGNATURE
        assert stream.seekable()
        stream.seek(0)
        assert len(stream.read()) == 3 * MIB + 8


def test_module_is_light_to_import() -> None:
    """DAG files import the operators, which import this module: it loads neither requests nor fsspec."""
    import subprocess
    import sys

    code = (
        "import sys; import airflow_provider_hitpaw.storage; "
        "print(','.join(m for m in ('requests', 'fsspec', 'upath', 'airflow') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
