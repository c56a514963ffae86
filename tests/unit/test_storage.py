"""storage: result names, keeping results (both or neither, checked, capped, without the key), inputs.

Downloads come from a real HTTP server on 127.0.0.1 (``http.server`` in a thread), so streaming, a body cut
short, a redirect, a trickle and a dropped connection are the real thing, not mocks.
"""

from __future__ import annotations

import gc
import json
import os
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from airflow_provider_hitpaw import _api, _names, storage
from airflow_provider_hitpaw._kept import record_name
from airflow_provider_hitpaw._png import PNG_SIGNATURE
from airflow_provider_hitpaw._settings import ConnectionSettings
from airflow_provider_hitpaw.exceptions import (
    HitPawAuthenticationError,
    HitPawConfigurationError,
    HitPawConnectionError,
    HitPawError,
    HitPawInvalidRequestError,
    HitPawResponseError,
    HitPawServerError,
    HitPawStorageError,
    HitPawUntrustedAnswerError,
)
from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook
from airflow_provider_hitpaw.storage import (
    as_storage_path,
    check_unique_names,
    open_source,
    persist_job_results,
    read_source,
    result_names,
    storage_uri,
)
from tests.conftest import SECRET_KEY, task_context

MIB = 1024 * 1024


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def make_png(width: int = 4, height: int = 3, extra: bytes = b"") -> bytes:
    """A well-formed grey PNG (``extra`` goes into a private ancillary chunk, to vary the bytes)."""
    rows = b"".join(b"\x00" + bytes(range(width)) for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
    if extra:
        body += png_chunk(b"prVt", extra)
    return PNG_SIGNATURE + body + png_chunk(b"IEND", b"")


CUTOUT = make_png(8, 8, b"cut-out")
MASK = make_png(8, 8, b"mask")


def big_png_parts(size: int) -> tuple[bytes, int, bytes]:
    """A PNG of about ``size`` bytes, as head, zero-filled data length and tail, to stream without
    holding it: one huge private chunk of zeros."""
    head = PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00\x00"))
    zeros = size - len(head) - len(idat) - 12 - 12
    crc, left = zlib.crc32(b"prVt"), zeros
    while left:  # a megabyte at a time: this runs inside the memory measurement
        step = min(left, MIB)
        crc, left = zlib.crc32(Handler.block[:step], crc), left - step
    return (
        head + idat + struct.pack(">I", zeros) + b"prVt",
        zeros,
        struct.pack(">I", crc) + png_chunk(b"IEND", b""),
    )


# --- a local HTTP server --------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    files: ClassVar[dict[str, bytes]] = {}
    seen_headers: ClassVar[list[dict[str, str]]] = []
    hits: ClassVar[dict[str, int]] = {}
    sent: ClassVar[dict[str, int]] = {}
    block: ClassVar[bytes] = b"\x00" * MIB

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, body: bytes, content_type: str = "image/png", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, path: str, head: bytes, zeros: int, tail: bytes = b"") -> None:
        """Send ``head``, ``zeros`` zero bytes and ``tail``, counting what went out until the client left."""
        Handler.sent[path] = 0
        try:
            self.wfile.write(head)
            left = zeros
            while left > 0:
                n = min(left, len(Handler.block))
                self.wfile.write(Handler.block[:n])
                Handler.sent[path] += n
                left -= n
            self.wfile.write(tail)
        except OSError:
            self.close_connection = True

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        Handler.seen_headers.append(dict(self.headers))
        Handler.hits[path] = Handler.hits.get(path, 0) + 1
        if path.startswith("/files/"):
            data = Handler.files.get(path.removeprefix("/files/"))
            if data is None:
                self._send(404, b"not found", "text/plain")
            else:
                self._send(200, data)
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[-1]), b"<html>internal-secret-body</html>", "text/html")
        elif path == "/not-png.png":
            self._send(200, b"<html>a login page, not an image</html>", "text/html")
        elif path == "/png-then-html.png":
            self._send(200, PNG_SIGNATURE + b"<html><body>Service Unavailable</body></html>" * 20)
        elif path == "/trailing.png":
            self._send(200, CUTOUT + b"<html>appended</html>")
        elif path == "/truncated.png":
            self._send(200, CUTOUT[:-12])
        elif path == "/tiny.png":
            self._send(200, b"\x89P")
        elif path == "/big.png":
            head, zeros, tail = big_png_parts(int(query.split("size=", 1)[1]))
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(head) + zeros + len(tail)))
            self.end_headers()
            self._stream(path, head, zeros, tail)
        elif path == "/endless.png":
            # No Content-Length, and far more than any cap: only the client's limit stops it.
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.close_connection = True
            self._stream(path, HUGE_CHUNK_HEAD, 200 * MIB)
        elif path == "/gzip-bomb.png":
            self._send(200, gzip_bomb(), Content_Encoding="gzip")
        elif path == "/drip.png":
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(CUTOUT)))
            self.end_headers()
            try:
                for byte in CUTOUT:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                self.close_connection = True
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
            for piece in (CUTOUT[:40], CUTOUT[40:60]):
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()
            self.close_connection = True
        elif path == "/flaky.png":
            if Handler.hits[path] == 1:
                self._send(503, b"busy", "text/plain")
            else:
                self._send(200, CUTOUT)
        elif path == "/redirect":
            target = query.split("to=", 1)[1].split("&", 1)[0]
            self._send(302, b"internal-secret-body", "text/plain", Location=target)
        elif path == "/loop":
            self._send(302, b"", "text/plain", Location="/loop")
        else:
            self._send(404, b"", "text/plain")


#: A PNG's start whose second chunk claims 2 GiB: what follows passes the structure check as chunk data,
#: so only the size cap can stop an endless body.
HUGE_CHUNK_HEAD = (
    PNG_SIGNATURE + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)) + b"\x7f\xff\xff\xffprVt"
)
_BOMB: list[bytes] = []


def gzip_bomb() -> bytes:
    """A gzip body of about 200 kB that inflates to 200 MiB (a PNG signature, then zeros)."""
    if not _BOMB:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        parts = [compressor.compress(HUGE_CHUNK_HEAD)]
        parts += [compressor.compress(b"\x00" * MIB) for _ in range(200)]
        _BOMB.append(b"".join([*parts, compressor.flush()]))
    return _BOMB[0]


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
    Handler.files["cutout.png"] = CUTOUT
    Handler.files["mask.png"] = MASK
    Handler.seen_headers.clear()
    Handler.hits.clear()
    Handler.sent.clear()
    return http_server


def make_hook(base_url: str, *, attempts: int = 1, **limits: Any) -> HitPawHook:
    """A hook whose connection points at ``base_url`` (its address kind is what result links may use)."""
    hook = HitPawHook(retry_policy=_api.RetryPolicy(max_attempts=attempts, base_delay=0.001, max_delay=0.002))
    hook.__dict__["settings"] = ConnectionSettings(base_url=base_url, api_key=SECRET_KEY, **limits)
    return hook


@pytest.fixture
def hook(server: str, no_sleep: list[float]) -> Iterator[HitPawHook]:
    with make_hook(server) as hook:
        yield hook


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "out"


def local_names(directory: Path) -> list[str]:
    return sorted(os.listdir(directory)) if directory.exists() else []


SOURCE = "https://cdn.example.com/sku-123/main.jpg"
RES, MASK_NAME = result_names(SOURCE)
RECORD = record_name(RES)


def completed(server: str, res: str = "/files/cutout.png", mask: str = "/files/mask.png") -> dict[str, Any]:
    return {
        "job_id": "f5007c0b",
        "status": "COMPLETED",
        "res_url": f"{server}{res}",
        "mask_url": f"{server}{mask}",
        "original_url": SOURCE,
    }


def keep(hook: HitPawHook, status: dict[str, Any], output: Any, **kwargs: Any) -> dict[str, str]:
    return persist_job_results(status, SOURCE, str(output), hook=hook, **kwargs)


# --- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "stem"),
    [
        ("https://cdn.example.com/shoes/2026/shoe-042.jpg", "shoe-042"),
        ("https://cdn.example.com/shoes/shoe-042.jpg?width=800&sig=abc#top", "shoe-042"),
        ("https://cdn.example.com/a%20b%2Fc.png", "c"),  # %2F decodes to a separator: the last part wins
        ("https://cdn.example.com/my%20photo.webp", "my_photo"),
        ("s3://bucket/inputs/portrait.PNG", "portrait"),
        ("gs://bucket/deep/path/item.v2.jpeg", "item.v2"),
        ("file:///data/in/shoe.jpg", "shoe"),
        ("C:\\images\\shoe.jpg", "shoe"),
        ("https://cdn.example.com/image?id=42", "image"),
        ("photo:1<2>|?*.jpg", "photo_1_2_"),
        ("../../etc/passwd", "passwd"),
        ("https://cdn.example.com/", "image"),
        ("???.png", "image"),
        ("produit-été.jpg", "produit-été"),
        ("商品写真.jpg", "商品写真"),
        ("-dash.jpg", "dash"),
    ],
)
def test_result_names_keep_the_readable_stem(source: str, stem: str) -> None:
    res, mask = result_names(source)
    digest = res.removeprefix(f"{stem}-").removesuffix(".png")
    assert len(digest) == 12, res
    assert set(digest) <= set("0123456789abcdef"), res
    assert mask == f"{stem}-{digest}_mask.png"


def test_result_names_are_stable_across_runs_and_versions() -> None:
    """A later run (and the next release) must find the files an earlier one kept: the names are pinned."""
    assert result_names("https://cdn.example.com/sku-123/main.jpg") == (
        "main-e2d7699b7c21.png",
        "main-e2d7699b7c21_mask.png",
    )


def test_no_two_inputs_share_a_file_as_real_catalogues_name_them() -> None:
    inputs = [
        "https://cdn.example.com/sku-123/main.jpg",
        "https://cdn.example.com/sku-456/main.jpg",
        "https://cdn.example.com/a/photo.jpg",
        "https://cdn.example.com/b/photo.jpg",
        "https://cdn.example.com/photo.png",
        "https://cdn.example.com/photo.jpg?v=2",
        "https://cdn.example.com/photo.jpg",
        "https://cdn.example.com/a.jpg",
        "https://cdn.example.com/a_mask.jpg",
        "file:///data/in/a.jpg",
        "file:///data/in/a_mask.jpg",
    ]
    names = [name for source in inputs for name in result_names(source)]
    assert len(names) == len(set(names)), "two inputs, or a cut-out and another input's mask, share a file"
    check_unique_names(inputs)


def test_a_name_clash_is_found_before_anything_is_paid_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_names, "_HASH_DIGITS", 0)  # as if two inputs shared their hash
    check_unique_names(["https://x/a/main.jpg", "https://x/a/main.jpg"])  # one input twice is no clash
    with pytest.raises(HitPawConfigurationError, match="would both be kept as") as raised:
        check_unique_names(["https://x/a/main.jpg", "https://x/b/main.jpg"])
    assert raised.value.field == "output_path"


def test_long_names_in_any_script_fit_a_file_system(tmp_path: Path) -> None:
    """150 CJK letters are 450 bytes: names are capped in bytes, leaving room for the temporary prefix."""
    res, mask = result_names("https://cdn.example.com/" + "商" * 150 + ".jpg")
    for name in (res, mask, f".{mask}.partial-{'0' * 12}"):
        assert len(name.encode()) < 255
        (tmp_path / name).write_bytes(b"x")  # the file system takes it
    assert res.startswith("商" * 40)


def test_result_names_are_never_hidden_or_traversing() -> None:
    for source in ["https://x/..png", "https://x/.hidden.jpg", "/a/../..", "..", ".", "https://x/%2e%2e"]:
        for name in result_names(source):
            assert not name.startswith(".")
            assert "/" not in name
            assert "\\" not in name


# --- paths ---------------------------------------------------------------------------------------------


def test_as_storage_path_local(tmp_path: Path) -> None:
    assert storage_uri(as_storage_path("/data/out")) == "file:///data/out"
    assert storage_uri(as_storage_path(tmp_path)) == f"file://{tmp_path}"
    assert storage_uri(as_storage_path(f"file://{tmp_path}/x")) == f"file://{tmp_path}/x"
    assert storage_uri(as_storage_path("/data/out/../in")) == "file:///data/in"


def test_a_relative_path_is_refused_not_resolved_against_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(HitPawConfigurationError, match="relative path") as raised:
        as_storage_path("rel/out")
    assert raised.value.field == "output_path"
    assert str(tmp_path) in str(raised.value)


@pytest.mark.parametrize("uri", ["file://data/out", "local://data/out", "file://", "file://server/share/out"])
def test_a_file_uri_that_is_not_absolute_is_refused(uri: str) -> None:
    """``file://data/out`` names a host "data": it once resolved against the worker's working directory."""
    with pytest.raises(HitPawConfigurationError) as raised:
        as_storage_path(uri)
    assert raised.value.field == "output_path"


def test_a_file_uri_on_localhost_is_the_local_path() -> None:
    assert storage_uri(as_storage_path("file://localhost/data/out")) == "file:///data/out"


def test_an_output_folder_that_can_never_take_a_file_is_refused_before_paying(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"x")
    for folder in (tmp_path / "a-file" / "out", Path("/dev/null"), Path("/dev/null/out")):
        with pytest.raises(HitPawConfigurationError, match="not a folder"):
            storage.check_writable_folder(as_storage_path(str(folder)))
    storage.check_writable_folder(as_storage_path(str(tmp_path / "new" / "deeper")))  # fine: creatable


def test_as_storage_path_keeps_a_path_object() -> None:
    path = as_storage_path("/data/out")
    assert as_storage_path(path) is path


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


def test_input_identity_is_one_for_one_file(tmp_path: Path) -> None:
    assert storage.input_identity(str(tmp_path / "a.jpg")) == storage.input_identity(
        f"file://{tmp_path}/a.jpg"
    )
    assert storage.input_identity("https://x/a.jpg?v=1") == "https://x/a.jpg?v=1"


# --- keeping a job's results --------------------------------------------------------------------------


def test_keep_to_a_local_directory(hook: HitPawHook, server: str, out_dir: Path) -> None:
    paths = keep(hook, completed(server), out_dir)
    assert paths == {"res_path": f"file://{out_dir}/{RES}", "mask_path": f"file://{out_dir}/{MASK_NAME}"}
    assert (out_dir / RES).read_bytes() == CUTOUT
    assert (out_dir / MASK_NAME).read_bytes() == MASK
    assert local_names(out_dir) == sorted([RES, MASK_NAME, RECORD])
    json.dumps(paths)  # fit for XCom


def test_keep_to_memory_with_a_task_status(hook: HitPawHook, server: str, memory_root: str) -> None:
    status = _api.TaskStatus(**completed(server))
    paths = persist_job_results(status, "s3://in/portrait.png", f"{memory_root}/out/", hook=hook)
    res, mask = result_names("s3://in/portrait.png")
    assert paths == {"res_path": f"{memory_root}/out/{res}", "mask_path": f"{memory_root}/out/{mask}"}
    assert as_storage_path(paths["mask_path"]).read_bytes() == MASK
    kept = sorted(p.name for p in as_storage_path(f"{memory_root}/out").iterdir())
    assert kept == sorted([res, mask, record_name(res)])


def test_overwrite_replaces_both(hook: HitPawHook, server: str, out_dir: Path) -> None:
    out_dir.mkdir()
    (out_dir / RES).write_bytes(b"old")
    (out_dir / MASK_NAME).write_bytes(b"old mask")
    keep(hook, completed(server), out_dir, overwrite="overwrite")
    assert (out_dir / RES).read_bytes() == CUTOUT
    assert (out_dir / MASK_NAME).read_bytes() == MASK


def test_skip_keeps_a_pair_recorded_as_this_inputs_and_downloads_nothing(
    hook: HitPawHook, server: str, out_dir: Path
) -> None:
    keep(hook, completed(server), out_dir)
    Handler.hits.clear()
    paths = keep(hook, completed(server), out_dir, overwrite="skip")
    assert (out_dir / RES).read_bytes() == CUTOUT
    assert paths["res_path"].endswith(RES)
    assert Handler.hits == {}


def test_skip_writes_anew_a_pair_that_no_record_says_is_this_inputs(
    hook: HitPawHook, server: str, out_dir: Path
) -> None:
    """Files of the right names prove nothing (an earlier version, a hand-made file, another input's
    content): keeping them and paying every night for nothing was the old way."""
    out_dir.mkdir()
    (out_dir / RES).write_bytes(b"old")
    (out_dir / MASK_NAME).write_bytes(b"old mask")
    keep(hook, completed(server), out_dir, overwrite="skip")
    assert (out_dir / RES).read_bytes() == CUTOUT
    assert (out_dir / MASK_NAME).read_bytes() == MASK
    assert local_names(out_dir) == sorted([RES, MASK_NAME, RECORD])


def test_skip_writes_anew_a_pair_of_which_one_file_is_missing(
    hook: HitPawHook, server: str, out_dir: Path
) -> None:
    """Half a pair, left by an interrupted commit, is nothing kept: a retry once paid again and then
    failed on it for good, naming the wrong policy."""
    out_dir.mkdir()
    (out_dir / RES).write_bytes(b"left from a crash")
    keep(hook, completed(server), out_dir, overwrite="skip")
    assert (out_dir / RES).read_bytes() == CUTOUT
    assert (out_dir / MASK_NAME).read_bytes() == MASK


def test_overwrite_puts_the_old_pair_back_when_the_new_one_cannot_be_placed(
    hook: HitPawHook, server: str, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mask's move failing (a full disk, an object store's 503) once left the old mask without its
    cut-out; now the old pair stays as it was."""
    out_dir.mkdir()
    (out_dir / RES).write_bytes(b"old cut-out")
    (out_dir / MASK_NAME).write_bytes(b"old mask")
    real = os.replace

    def replace(src: str, dst: str) -> None:
        if dst.endswith(MASK_NAME):
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(storage.os, "replace", replace)
    with pytest.raises(HitPawError, match="Input/output error"):
        keep(hook, completed(server), out_dir, overwrite="overwrite")
    monkeypatch.setattr(storage.os, "replace", real)
    assert (out_dir / RES).read_bytes() == b"old cut-out"
    assert (out_dir / MASK_NAME).read_bytes() == b"old mask"
    assert local_names(out_dir) == sorted([RES, MASK_NAME])  # no partial or set-aside file left


@pytest.mark.parametrize("policy", ["overwrite", "skip", "fail"])
def test_a_folder_where_a_result_goes_is_refused_whatever_the_policy(
    hook: HitPawHook, server: str, out_dir: Path, policy: str
) -> None:
    """A rename onto a folder moves the file inside it: the task once succeeded with mask_path a folder."""
    (out_dir / MASK_NAME).mkdir(parents=True)
    with pytest.raises((HitPawError, HitPawConfigurationError)) as raised:
        keep(hook, completed(server), out_dir, overwrite=policy)
    assert not raised.value.retryable
    assert sorted(os.listdir(out_dir / MASK_NAME)) == []
    assert local_names(out_dir) == [MASK_NAME]


def test_fail_refuses_an_existing_file_before_downloading(
    hook: HitPawHook, server: str, out_dir: Path
) -> None:
    out_dir.mkdir()
    (out_dir / MASK_NAME).write_bytes(b"old")
    with pytest.raises(HitPawConfigurationError, match="already exists") as excinfo:
        keep(hook, completed(server), out_dir, overwrite="fail")
    assert excinfo.value.field == "output_path"
    assert local_names(out_dir) == [MASK_NAME]
    assert Handler.hits == {}


def test_fail_writes_when_nothing_is_there(hook: HitPawHook, server: str, memory_root: str) -> None:
    keep(hook, completed(server), memory_root, overwrite="fail")
    with pytest.raises(HitPawConfigurationError):
        keep(hook, {**completed(server), "job_id": "another-job"}, memory_root, overwrite="fail")


def test_fail_accepts_the_pair_this_very_job_kept_without_downloading_it_again(
    hook: HitPawHook, server: str, out_dir: Path
) -> None:
    """A retry that waits for the job its earlier try paid for, and whose results that try kept: its own
    files are no reason to fail."""
    first = keep(hook, completed(server), out_dir, overwrite="fail")
    hits = dict(Handler.hits)
    assert keep(hook, completed(server), out_dir, overwrite="fail") == first
    assert Handler.hits == hits
    (out_dir / MASK_NAME).write_bytes(b"changed since")  # no longer what the record describes
    with pytest.raises(HitPawConfigurationError, match="already exists"):
        keep(hook, completed(server), out_dir, overwrite="fail")


class TestRefuseExistingResults:
    """overwrite="fail" is judged before paying: ``refuse_existing_results``."""

    def test_nothing_there_passes(self, out_dir: Path) -> None:
        storage.refuse_existing_results(str(out_dir), SOURCE)

    @pytest.mark.parametrize("name", [RES, MASK_NAME])
    def test_either_file_is_refused_naming_it(self, out_dir: Path, name: str) -> None:
        out_dir.mkdir()
        (out_dir / name).write_bytes(b"older")
        with pytest.raises(HitPawConfigurationError, match="already exists") as raised:
            storage.refuse_existing_results(str(out_dir), SOURCE, own_job_id="f5007c0b")
        assert raised.value.field == "output_path"
        assert name in str(raised.value)

    def test_the_pair_the_tasks_own_job_kept_is_accepted(
        self, hook: HitPawHook, server: str, out_dir: Path
    ) -> None:
        keep(hook, completed(server), out_dir, overwrite="fail")
        storage.refuse_existing_results(str(out_dir), SOURCE, own_job_id="f5007c0b")
        with pytest.raises(HitPawConfigurationError, match="already exists"):
            storage.refuse_existing_results(str(out_dir), SOURCE, own_job_id="another-job")
        with pytest.raises(HitPawConfigurationError, match="already exists"):
            storage.refuse_existing_results(str(out_dir), SOURCE)
        with pytest.raises(HitPawConfigurationError, match="already exists"):  # another version of it
            storage.refuse_existing_results(
                str(out_dir), SOURCE, fingerprint="sha256:1", own_job_id="f5007c0b"
            )


# --- a store that refuses once the job was paid for -----------------------------------------------------


def test_a_store_that_refuses_the_upload_on_close_is_a_storage_error(
    hook: HitPawHook, server: str, memory_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object store's file uploads when closed: a bucket gone since the probe once escaped as a raw
    FileNotFoundError, past every handler that says what was paid for."""
    from fsspec.implementations.memory import MemoryFile

    def close(self: Any) -> None:
        if ".partial-" in str(self.path) and self.getbuffer().nbytes:
            raise FileNotFoundError("The specified bucket does not exist")

    monkeypatch.setattr(MemoryFile, "close", close)
    with pytest.raises(HitPawStorageError, match="The specified bucket does not exist") as raised:
        keep(hook, completed(server), memory_root, overwrite="overwrite")
    assert not raised.value.retryable


def test_what_could_not_be_kept_says_which_job_completed_and_where_its_results_are() -> None:
    status = {
        "job_id": "f5007c0b",
        "res_url": "https://r.example.com/c.png?Signature=SIGNED-SECRET",
        "mask_url": "https://r.example.com/m.png?Signature=SIGNED-SECRET",
    }
    refused = storage.not_kept_error(
        HitPawStorageError("the storage refused x", retryable=False), "f5007c0b", status
    )
    assert str(refused) == (
        "HitPaw: job 'f5007c0b' completed, but its results could not be kept in output_path: the storage "
        "refused x; its results stay at HitPaw for 8 days (res_url https://r.example.com/c.png, mask_url "
        "https://r.example.com/m.png; poll the job for the full links)"
    )
    assert not refused.retryable
    raw = storage.not_kept_error(ConnectionResetError(104, "reset sig=SIGNED-SECRET"), "f5007c0b", {})
    assert raw.retryable
    assert "SIGNED-SECRET" not in str(raw)
    assert "ConnectionResetError" in str(raw)


# --- which image a job is ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("submitted", "answered"),
    [
        ("https://cdn.example.com/a/b.jpg", "https://cdn.example.com/a/b.jpg"),
        ("https://cdn.example.com/a/my photo.jpg", "https://cdn.example.com/a/my%20photo.jpg"),
        ("https://cdn.example.com/été.jpg", "https://CDN.example.com:443/%c3%a9t%C3%A9.jpg"),
        ("https://cdn.example.com/a%2bb.jpg", "https://cdn.example.com/a+b.jpg"),
        ("https://bücher.example/a.jpg", "https://xn--bcher-kva.example/a.jpg"),
        ("https://cdn.example.com/img?id=1&w=2", "https://cdn.example.com/img?w=2&id=1"),
        ("https://cdn.example.com/img?id=1", "https://cdn.example.com/img"),
        (
            "https://b.example.com/k.jpg?X-Amz-Signature=a%2Bb&X-Amz-Credential=c",
            "https://b.example.com/k.jpg?X-Amz-Signature=a+b",
        ),
        ("https://user:pw@cdn.example.com/a.jpg", "https://cdn.example.com/a.jpg"),
    ],
)
def test_the_same_image_written_otherwise_is_the_same(submitted: str, answered: str) -> None:
    assert storage.same_image_url(submitted, answered)


@pytest.mark.parametrize(
    ("submitted", "answered"),
    [
        ("https://cdn.example.com/a/b.jpg", "https://cdn.example.com/a/c.jpg"),
        ("https://cdn.example.com/a/b.jpg", "https://cdn.example.org/a/b.jpg"),
        ("https://cdn.example.com/a/b.jpg", "http://cdn.example.com/a/b.jpg"),
        ("https://cdn.example.com:8443/a/b.jpg", "https://cdn.example.com/a/b.jpg"),
        ("https://cdn.example.com/a%2Fb.jpg", "https://cdn.example.com/a/b.jpg"),
        ("https://cdn.example.com/img?id=1", "https://cdn.example.com/img?id=2"),
        ("https://cdn.example.com/a.jpg", "not a url at all"),
        ("http://127.0.0.1:99999/a.jpg", "http://127.0.0.1/a.jpg"),
    ],
)
def test_another_image_is_another(submitted: str, answered: str) -> None:
    assert not storage.same_image_url(submitted, answered)


def test_a_job_of_another_image_is_refused_without_any_query(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(HitPawUntrustedAnswerError, match="one job cannot be two images") as raised:
        storage.check_answered_for(
            "job-1",
            "https://cdn.example.com/b.jpg?sig=SIGNED-B",
            "https://cdn.example.com/a.jpg?sig=SIGNED-A",
        )
    assert not raised.value.retryable
    assert "SIGNED" not in str(raised.value)
    assert "https://cdn.example.com/b.jpg" in str(raised.value)
    storage.check_answered_for("job-1", None, "https://cdn.example.com/a.jpg")
    assert "cannot be checked" in caplog.text


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_a_writer_that_loses_the_race_never_swaps_the_winners_file(
    hook: HitPawHook, server: str, out_dir: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """Another writer creates the cut-out while this one downloads: the target is created exclusively,
    so the loser gets an error (or, under skip, keeps the winner's complete pair), never a silent swap."""
    real = storage._download_checked

    def download_while_another_writes(hook: Any, url: str, target: Any) -> Any:
        partial = real(hook, url, target)
        if target.name == MASK_NAME:
            (out_dir / RES).write_bytes(b"the winner's cut-out")
            (out_dir / MASK_NAME).write_bytes(b"the winner's mask")
        return partial

    monkeypatch.setattr(storage, "_download_checked", download_while_another_writes)
    if policy == "skip":
        keep(hook, completed(server), out_dir, overwrite=policy)
    else:
        with pytest.raises(HitPawConfigurationError, match="already exists"):
            keep(hook, completed(server), out_dir, overwrite=policy)
    assert (out_dir / RES).read_bytes() == b"the winner's cut-out"
    assert (out_dir / MASK_NAME).read_bytes() == b"the winner's mask"
    assert local_names(out_dir) == sorted([RES, MASK_NAME])  # no partial file left


def test_a_failed_mask_leaves_no_cut_out_and_a_retry_succeeds(
    hook: HitPawHook, server: str, out_dir: Path
) -> None:
    """Both files land or neither: with overwrite='fail', a retry must not fail on the task's own file."""
    with pytest.raises(HitPawInvalidRequestError):
        keep(hook, completed(server, mask="/files/missing.png"), out_dir, overwrite="fail")
    assert local_names(out_dir) == []
    keep(hook, completed(server), out_dir, overwrite="fail")
    assert local_names(out_dir) == sorted([RES, MASK_NAME, RECORD])


def test_a_mask_that_cannot_be_placed_takes_the_cut_out_back(
    hook: HitPawHook, server: str, out_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = storage._create_exclusively

    def refuse_the_mask(partial: Any, target: Any) -> bool:
        if target.name == MASK_NAME:
            raise storage._storage_error(OSError(28, "No space left on device"), target)
        return real(partial, target)

    monkeypatch.setattr(storage, "_create_exclusively", refuse_the_mask)
    with pytest.raises(HitPawError, match="No space left"):
        keep(hook, completed(server), out_dir, overwrite="fail")
    assert local_names(out_dir) == []


def test_keep_checks_overwrite_before_anything(hook: HitPawHook, server: str, out_dir: Path) -> None:
    with pytest.raises(HitPawConfigurationError):
        keep(hook, completed(server), out_dir, overwrite="sometimes")
    assert Handler.hits == {}


@pytest.mark.parametrize("missing", ["res_url", "mask_url"])
def test_keep_needs_both_urls(hook: HitPawHook, server: str, out_dir: Path, missing: str) -> None:
    status = completed(server)
    status[missing] = None
    with pytest.raises(HitPawResponseError, match=missing):
        keep(hook, status, out_dir)
    assert local_names(out_dir) == []


# --- what a result link may answer ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/status/500", HitPawServerError),
        ("/status/503", HitPawServerError),
        ("/status/403", HitPawAuthenticationError),
        ("/status/404", HitPawInvalidRequestError),
        ("/not-png.png", HitPawResponseError),
        ("/png-then-html.png", HitPawResponseError),
        ("/trailing.png", HitPawResponseError),
        ("/truncated.png", HitPawResponseError),
        ("/tiny.png", HitPawResponseError),
        ("/short.png", HitPawError),
        ("/drop.png", HitPawConnectionError),
        ("/gzip-bomb.png", HitPawUntrustedAnswerError),
        ("/redirect?to=http://169.254.169.254/latest/meta-data/", HitPawUntrustedAnswerError),
        ("/loop", HitPawUntrustedAnswerError),
    ],
)
@pytest.mark.parametrize("existing", [False, True])
def test_a_bad_download_leaves_nothing_and_quotes_nothing(
    server: str, out_dir: Path, no_sleep: list[float], path: str, family: type[HitPawError], existing: bool
) -> None:
    out_dir.mkdir()
    if existing:
        (out_dir / RES).write_bytes(b"previous result")
    with make_hook(server, max_download_bytes=4 * MIB) as hook, pytest.raises(family) as raised:
        keep(
            hook,
            completed(server, res=f"{path}{'&' if '?' in path else '?'}Signature=SIGNED-SECRET"),
            out_dir,
        )
    # Neither a partial file nor a half-written pair: the directory is as it was.
    assert local_names(out_dir) == ([RES] if existing else [])
    if existing:
        assert (out_dir / RES).read_bytes() == b"previous result"
    assert "SIGNED-SECRET" not in str(raised.value)
    assert "internal-secret-body" not in str(raised.value)


def test_an_endless_body_stops_at_the_cap(server: str, out_dir: Path) -> None:
    with make_hook(server, max_download_bytes=2 * MIB) as hook, pytest.raises(HitPawUntrustedAnswerError):
        keep(hook, completed(server, res="/endless.png"), out_dir)
    assert local_names(out_dir) == []
    time.sleep(0.2)
    assert Handler.sent["/endless.png"] < 50 * MIB  # the client hung up, not the server's end


def test_a_trickling_download_ends_by_its_deadline(server: str, out_dir: Path) -> None:
    # Each byte comes well within the read time-out, the whole body in 19 s: only the download's own
    # deadline (1 s) can end it, by cutting the connection or by the read time-out it shrinks to the time
    # left (whichever comes first). Without that deadline the download succeeds.
    with make_hook(server, download_timeout=1.0) as hook, pytest.raises(HitPawConnectionError):
        keep(hook, completed(server, res="/drip.png"), out_dir)
    assert local_names(out_dir) == []


def test_a_redirect_within_the_allowed_addresses_is_followed(
    hook: HitPawHook, server: str, out_dir: Path
) -> None:
    keep(hook, completed(server, res=f"/redirect?to={server}/files/cutout.png"), out_dir)
    assert (out_dir / RES).read_bytes() == CUTOUT


def test_a_link_to_this_machine_is_refused_when_hitpaw_is_elsewhere(server: str, out_dir: Path) -> None:
    """A public base URL vouches for public result hosts only: nothing on 127.0.0.1 is even connected to."""
    with (
        make_hook("https://api-base.hitpaw.com") as hook,
        pytest.raises(HitPawUntrustedAnswerError) as raised,
    ):
        keep(hook, completed(server), out_dir)
    assert "loopback" in str(raised.value)
    assert Handler.hits == {}


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/a.png",
        "file:///etc/passwd",
        "http://user:pass@127.0.0.1:9/a.png",
        "http:///a.png",
        "http://[::1/a.png",  # a bare ValueError once escaped here, after payment
        "http://127.0.0.1:99999/a.png",
    ],
)
def test_a_link_that_is_no_plain_http_url_is_refused(hook: HitPawHook, out_dir: Path, url: str) -> None:
    status = {"job_id": "j", "res_url": url, "mask_url": url}
    with pytest.raises(HitPawUntrustedAnswerError):
        keep(hook, status, out_dir)


def test_transient_faults_are_retried(server: str, out_dir: Path, no_sleep: list[float]) -> None:
    with make_hook(server, attempts=3) as hook:
        keep(hook, completed(server, res="/flaky.png"), out_dir)
    assert (out_dir / RES).read_bytes() == CUTOUT
    assert Handler.hits["/flaky.png"] == 2
    assert len(no_sleep) == 1
    assert local_names(out_dir) == sorted([RES, MASK_NAME, RECORD])


def test_permanent_faults_are_not_retried(server: str, out_dir: Path, no_sleep: list[float]) -> None:
    with make_hook(server, attempts=3) as hook, pytest.raises(HitPawInvalidRequestError):
        keep(hook, completed(server, res="/status/404"), out_dir)
    assert Handler.hits["/status/404"] == 1


def test_no_api_key_is_sent_to_a_result_host(hook: HitPawHook, server: str, out_dir: Path) -> None:
    keep(hook, completed(server), out_dir)
    assert len(Handler.seen_headers) == 2
    for headers in Handler.seen_headers:
        assert "apikey" not in {name.lower() for name in headers}
        assert SECRET_KEY not in json.dumps(headers)


def test_a_large_download_streams_in_bounded_memory(hook: HitPawHook, server: str, out_dir: Path) -> None:
    size = 50 * MIB
    keep(hook, completed(server), out_dir)  # warm up: first imports are no part of a copy
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        persist_job_results(
            completed(server, res=f"/big.png?size={size}"), "https://x/big.jpg", str(out_dir), hook=hook
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    res, _ = result_names("https://x/big.jpg")
    assert (out_dir / res).stat().st_size == size
    # The server thread's allocations count too; a copy held in memory would be 50 MiB on its own.
    assert peak < 10 * MIB, f"peak {peak / MIB:.1f} MiB for a {size / MIB:.0f} MiB file"


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


def test_overwrite_twice_in_an_object_store_leaves_one_pair(
    hook: HitPawHook, server: str, memory_root: str
) -> None:
    keep(hook, completed(server), memory_root, overwrite="overwrite")
    Handler.files["cutout.png"] = make_png(8, 8, b"second run")
    keep(hook, completed(server), memory_root, overwrite="overwrite")
    names = sorted(p.name for p in as_storage_path(memory_root).iterdir())
    assert names == sorted([RES, MASK_NAME, RECORD])  # the set-aside old files are gone too
    assert (as_storage_path(memory_root) / RES).read_bytes() == make_png(8, 8, b"second run")


@pytest.mark.parametrize(
    ("airflow_version", "upath_version", "conflict"),
    [
        ("3.0.6", "0.3.10", True),
        ("3.0.0", "0.3.0", True),
        ("3.0.6", "0.2.6", False),
        ("3.1.8", "0.2.6", False),
        ("3.2.2", "0.3.10", False),
        ("2.11.2", "0.2.6", False),
        (None, "0.3.10", False),
    ],
)
def test_airflow_3_0_with_universal_pathlib_0_3_is_named_before_paying(
    airflow_version: str | None, upath_version: str, conflict: bool
) -> None:
    """Measured: on Airflow 3.0 with universal-pathlib 0.3 every ObjectStoragePath fails."""
    said = storage.storage_stack_conflict(airflow_version, upath_version)
    assert (said is not None) is conflict
    if conflict:
        assert '"universal-pathlib<0.3"' in said


def test_the_conflict_is_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    versions = {"apache-airflow": "3.0.6", "universal-pathlib": "0.3.10"}
    monkeypatch.setattr(storage, "_installed_version", versions.get)
    with pytest.raises(HitPawConfigurationError, match=r"output_path.*universal-pathlib<0\.3"):
        storage.as_storage_path("file:///data/out")


# --- a stale pair, in the log's words ------------------------------------------------------------------


def test_a_pair_made_from_an_older_version_of_the_input_is_said_to_be_replaced(
    hook: HitPawHook, server: str, out_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An edited source's pair has a record, of its older version: the log once said the files had no
    record at all; it says what happens: that stale pair is replaced."""
    keep(hook, completed(server), out_dir, overwrite="skip", fingerprint="ETag:first-version:size:10")
    caplog.clear()
    caplog.set_level("INFO", logger="airflow_provider_hitpaw.storage")
    Handler.files["cutout.png"] = make_png(8, 8, b"second version")
    keep(hook, completed(server), out_dir, overwrite="skip", fingerprint="ETag:second-version:size:11")
    said = caplog.text
    assert "made from an older version of this input" in said
    assert "replacing that stale pair" in said
    assert "without a record" not in said
    assert (out_dir / RES).read_bytes() == make_png(8, 8, b"second version")
    record = json.loads((out_dir / RECORD).read_text())
    assert record["fingerprint"] == "ETag:second-version:size:11"


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (None, "exist without a record that they were made from this input; writing them anew"),
        (b"{not json", "have a record that cannot be read; writing them anew"),
        ({"input": "https://cdn.example.com/other.jpg"}, "carry a record of another input"),
        ({"version": 2, "input": SOURCE, "input_sha256": "0" * 64}, "carry a record of another input"),
    ],
)
def test_a_pair_skip_does_not_reuse_is_said_why(
    hook: HitPawHook, server: str, out_dir: Path, caplog: pytest.LogCaptureFixture, record: Any, words: str
) -> None:
    out_dir.mkdir()
    (out_dir / RES).write_bytes(b"old")
    (out_dir / MASK_NAME).write_bytes(b"old mask")
    if record is not None:
        (out_dir / RECORD).write_bytes(record if isinstance(record, bytes) else json.dumps(record).encode())
    caplog.set_level("INFO", logger="airflow_provider_hitpaw.storage")
    keep(hook, completed(server), out_dir, overwrite="skip")
    assert words in caplog.text


# --- an object store's folder is probed before paying -------------------------------------------------


def test_an_object_store_folder_is_probed_and_keeps_nothing_of_it(memory_root: str) -> None:
    storage.check_writable_folder(as_storage_path(f"{memory_root}/out"))
    folder = as_storage_path(memory_root)
    assert not folder.exists() or list(folder.rglob("*")) == []


@pytest.mark.parametrize(
    ("step", "failure", "expected", "words"),
    [
        (
            "pipe_file",
            FileNotFoundError("The specified bucket does not exist"),
            HitPawConfigurationError,
            "bucket",
        ),
        ("pipe_file", PermissionError("Access Denied"), HitPawConfigurationError, "Access Denied"),
        ("pipe_file", NotImplementedError(), HitPawConfigurationError, "NotImplementedError"),
        ("rm_file", PermissionError("Access Denied"), HitPawConfigurationError, "removes files too"),
        ("pipe_file", ConnectionResetError(104, "Connection reset by peer"), HitPawStorageError, "reset"),
    ],
)
def test_an_object_store_folder_that_cannot_take_results_is_refused_before_paying(
    memory_root: str,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
    failure: BaseException,
    expected: type[Exception],
    words: str,
) -> None:
    """A missing bucket, a refused permission, a store that takes no writes: refused for good, in the
    store's words. A store that does not answer now: a retryable storage error."""
    from fsspec.implementations.memory import MemoryFileSystem

    def fail(*args: Any, **kwargs: Any) -> None:
        raise failure

    folder = as_storage_path(f"{memory_root}/out")
    with monkeypatch.context() as patch:
        patch.setattr(MemoryFileSystem, step, fail)  # undone before memory_root cleans up
        with pytest.raises(expected) as raised:
            storage.check_writable_folder(folder)
    assert words in str(raised.value)
    assert isinstance(raised.value, HitPawError)
    assert raised.value.retryable is (expected is HitPawStorageError)
    if expected is HitPawConfigurationError:
        assert raised.value.field == "output_path"  # type: ignore[attr-defined]


def test_a_store_without_a_conditional_create_keeps_the_two_step_check(memory_root: str) -> None:
    assert not storage.has_conditional_create(as_storage_path(memory_root))


# --- what a store said, and whether trying again can help ---------------------------------------------


def test_a_stores_words_without_its_request_ids_xml_or_signatures() -> None:
    azure = RuntimeError(
        "Failed to upload block: The specified container does not exist.\nRequestId:85cd1a5e\n"
        "Time:2026-12-07T19:22:57.939Z\nErrorCode:ContainerNotFound\nContent: <?xml version='1.0'?><Error/>"
    )
    assert storage.store_words(azure) == (
        "RuntimeError: Failed to upload block: The specified container does not exist. "
        "ErrorCode:ContainerNotFound"
    )
    signed = OSError("GET https://acct.blob.core.windows.net/c/a.png?sv=2024&sig=c2VjcmV0 failed")
    assert "c2VjcmV0" not in storage.store_words(signed)
    assert "sig=REDACTED" in storage.store_words(signed)
    assert len(storage.store_words(OSError("x" * 5000))) < 500


class _Answered(Exception):
    def __init__(self, status_code: int | None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def _wrapped(cause: BaseException) -> RuntimeError:
    try:
        raise RuntimeError("Failed to upload block") from cause
    except RuntimeError as err:
        return err


@pytest.mark.parametrize(
    ("err", "permanent"),
    [
        (FileNotFoundError("The specified bucket does not exist"), True),
        (PermissionError("Access Denied"), True),
        (NotImplementedError(), True),
        (ValueError("No filesystem registered for scheme https"), True),
        (_Answered(403), True),
        (_Answered(404), True),
        (_Answered(503), False),
        (_Answered(429), False),
        (_Answered(None), False),
        (_wrapped(_Answered(404)), True),
        (_wrapped(_Answered(500)), False),
        (ConnectionResetError(104, "Connection reset by peer"), False),
        (OSError(28, "No space left on device"), False),
        (OSError(13, "Permission denied"), True),
        # A local file system's errno decides there, as it always did.
        (FileNotFoundError(2, "No such file or directory"), False),
    ],
)
def test_which_storage_failures_a_retry_cannot_mend(err: BaseException, permanent: bool) -> None:
    assert storage.is_permanent(err) is permanent


# --- what a hostile review found ------------------------------------------------------------------------


def _connection_reset(*args: Any, **kwargs: Any) -> None:
    raise ConnectionResetError(104, "Connection reset by peer")


@pytest.mark.parametrize("kind", ["single", "batch", "sensor"])
def test_a_passing_fault_of_the_write_probe_keeps_airflows_retries(
    kind: str, memory_root: str, hitpaw_conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException
    from fsspec.implementations.memory import MemoryFileSystem

    from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator, SegmentImageOperator
    from airflow_provider_hitpaw.sensors.hitpaw import SegmentationSensor

    out, url = f"{memory_root}/out", "https://cdn.example.com/a.jpg"
    operator: Any
    if kind == "single":
        operator = SegmentImageOperator(task_id="s", file_url=url, output_path=out, deferrable=False)
    elif kind == "batch":
        operator = SegmentImageBatchOperator(task_id="b", file_urls=[url], output_path=out, deferrable=False)
    else:
        operator = SegmentationSensor(task_id="w", job_id="a" * 32, output_path=out, deferrable=True)
    monkeypatch.setattr(MemoryFileSystem, "pipe_file", _connection_reset)
    with pytest.raises(HitPawStorageError) as raised:
        operator.execute(task_context())
    assert raised.value.retryable
    assert not isinstance(raised.value, AirflowFailException)


SAS_QUERY = "sv=2022-11-02&sp=racwdl&sig=SECRETSIG%3D"


def test_a_signed_output_path_is_not_quoted_in_its_refusal() -> None:
    with pytest.raises(HitPawError) as raised:
        storage.as_storage_path(f"nosuchfs://acct/results/out?{SAS_QUERY}", field="output_path")
    assert "SECRETSIG" not in str(raised.value)
    assert "nosuchfs://acct/results/out" in str(raised.value)


@pytest.mark.parametrize(
    "said",
    [
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=SECRETKEY==;EndpointSuffix=core.windows.net",
        "400, message='Bad Request', url='https://files.example.com/a.jpg?access_token=SECRETTOKEN'",
        "redirected to https%3A%2F%2Facct.blob.core.windows.net%2Fc%3Fsv%3D1%26sig%3DSECRETSIG",
        "401: Authorization: Bearer SECRETTOKEN",
        "403 url='https://acct.blob.core.windows.net/c?comp=list&sig=SECRETSIG'",
    ],
)
def test_store_words_leave_out_every_credential(said: str) -> None:
    assert "SECRET" not in storage.store_words(OSError(said))


def test_a_refused_listing_is_logged_without_its_signature(
    memory_root: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    from airflow_provider_hitpaw import _kept

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("403 Forbidden url='https://acct.blob.core.windows.net/c?comp=list&sig=SECRETSIG'")

    folder = storage.as_storage_path(f"{memory_root}/out")
    monkeypatch.setattr(MemoryFileSystem, "ls", refuse)
    with caplog.at_level("INFO"):
        assert _kept.list_folder(folder, {"x.png"}) is None
    assert "SECRETSIG" not in caplog.text


class _OldGcsfs:
    """A filesystem whose put takes any keyword and overwrites: gcsfs and s3fs before ``mode``."""

    def _pipe_file(self, path: str, data: bytes, **kwargs: Any) -> None: ...


class _NewGcsfs:
    def _pipe_file(self, path: str, data: bytes, mode: str = "overwrite", **kwargs: Any) -> None: ...


@pytest.mark.parametrize(("fs_class", "known"), [(_OldGcsfs, False), (_NewGcsfs, True)])
def test_only_a_filesystem_that_knows_create_mode_counts_as_conditional(
    fs_class: type, known: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs_class, "__module__", "gcsfs.core")
    assert storage._knows_create_mode(fs_class) is known


def test_an_existing_target_is_never_written_over_even_by_a_conditional_put(
    memory_root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = storage.as_storage_path(f"{memory_root}/race")
    (folder / "a.png").write_bytes(b"another writer's file")
    (folder / ".a.png.partial").write_bytes(b"ours")
    # A store that takes mode="create" and overwrites anyway (an S3-compatible server ignoring the header).
    monkeypatch.setattr(storage, "has_conditional_create", lambda path: True)
    monkeypatch.setattr(storage, "_create_on_store", lambda partial, target: target.write_bytes(b"ours") > 0)
    assert storage._create_exclusively(folder / ".a.png.partial", folder / "a.png") is False
    assert (folder / "a.png").read_bytes() == b"another writer's file"
