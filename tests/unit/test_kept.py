"""When a kept pair may answer for an input: only when its record proves it, never on a guess."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_hitpaw import _kept, storage

IDENTITY = "file:///data/catalogue/运动鞋/main.jpg"


@pytest.fixture
def folder(tmp_path: Path) -> Any:
    return storage.as_storage_path(str(tmp_path))


def kept_pair(
    folder: Any, identity: str = IDENTITY, fingerprint: str | None = "sha256:aa"
) -> tuple[str, str]:
    names = storage.result_names(identity)
    for name, body in zip(names, (b"cut-out", b"mask"), strict=True):
        (folder / name).write_bytes(body)
    _kept.write_record(folder, identity, fingerprint, "job-1", [folder / name for name in names])
    return names


def test_a_recorded_pair_is_found_with_its_job(folder: Any) -> None:
    names = kept_pair(folder)
    kept = _kept.find_kept(folder, IDENTITY, "sha256:aa", names)
    assert kept is not None
    assert kept.job_id == "job-1"
    assert kept.res_path == storage.storage_uri(folder / names[0])
    assert kept.as_result()["consume_coins"] == 0
    assert kept.as_result()["reused"] is True


def test_the_record_is_json_beside_the_pair_and_no_partial_is_left(folder: Any, tmp_path: Path) -> None:
    names = kept_pair(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, _kept.record_name(names[0])])
    record = json.loads((tmp_path / _kept.record_name(names[0])).read_text())
    assert record["input"] == IDENTITY
    assert (record["cutout_bytes"], record["mask_bytes"]) == (7, 4)


@pytest.mark.parametrize(
    ("identity", "fingerprint"),
    [
        (IDENTITY, "sha256:bb"),  # the file changed
        (IDENTITY, None),
        ("file:///data/catalogue/other/main.jpg", "sha256:aa"),  # another input's record
    ],
)
def test_another_input_or_content_is_not_reused(folder: Any, identity: str, fingerprint: str | None) -> None:
    names = kept_pair(folder)
    assert _kept.find_kept(folder, identity, fingerprint, names) is None


def test_a_name_in_another_normal_form_is_the_same_input(folder: Any) -> None:
    decomposed = unicodedata.normalize("NFD", "file:///data/Größe/main.jpg")
    names = kept_pair(folder, identity=decomposed)
    composed = unicodedata.normalize("NFC", decomposed)
    assert _kept.find_kept(folder, composed, "sha256:aa", names) is not None


@pytest.mark.parametrize(
    "damage",
    [
        "missing-record",
        "corrupt",
        "huge",
        "not-an-object",
        "old-version",
        "no-job",
        "bool-size",
        "foreign-names",
    ],
)
def test_a_missing_or_unreadable_or_foreign_record_means_segment_again(
    folder: Any, tmp_path: Path, damage: str
) -> None:
    names = kept_pair(folder)
    path = tmp_path / _kept.record_name(names[0])
    record = json.loads(path.read_text())
    if damage == "missing-record":
        path.unlink()
    elif damage == "corrupt":
        path.write_text(path.read_text()[:-5])
    elif damage == "huge":
        path.write_text(json.dumps({**record, "pad": "x" * _kept.MAX_RECORD_BYTES}))
    elif damage == "not-an-object":
        path.write_text(json.dumps([record]))
    elif damage == "old-version":
        path.write_text(json.dumps({**record, "version": 0}))
    elif damage == "no-job":
        path.write_text(json.dumps({**record, "job_id": ""}))
    elif damage == "bool-size":
        path.write_text(json.dumps({**record, "mask_bytes": True}))
    else:
        path.write_text(json.dumps({**record, "cutout": "other.png"}))
    assert _kept.find_kept(folder, IDENTITY, "sha256:aa", names) is None


@pytest.mark.parametrize("which", [0, 1])
def test_a_file_replaced_or_gone_since_is_not_reused(folder: Any, tmp_path: Path, which: int) -> None:
    names = kept_pair(folder)
    (tmp_path / names[which]).write_bytes(b"something else entirely")
    assert _kept.find_kept(folder, IDENTITY, "sha256:aa", names) is None
    (tmp_path / names[which]).unlink()
    assert _kept.find_kept(folder, IDENTITY, "sha256:aa", names) is None


def test_forgetting_a_record_removes_only_it(folder: Any, tmp_path: Path) -> None:
    names = kept_pair(folder)
    _kept.forget_record(folder, names[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    _kept.forget_record(folder, names[0])  # nothing there: no error


def test_a_local_fingerprint_follows_the_bytes(tmp_path: Path) -> None:
    photo = tmp_path / "main.jpg"
    photo.write_bytes(b"\xff\xd8 one")
    first = _kept.source_fingerprint(storage.as_storage_path(str(photo)))
    photo.write_bytes(b"\xff\xd8 two")
    second = _kept.source_fingerprint(storage.as_storage_path(str(photo)))
    assert first.startswith("sha256:")
    assert second.startswith("sha256:")
    assert first != second
    photo.write_bytes(b"\xff\xd8 one")
    assert _kept.source_fingerprint(storage.as_storage_path(str(photo))) == first


def test_an_object_store_fingerprint_uses_its_etag_without_reading(mocker: Any) -> None:
    path = mocker.MagicMock()
    path.protocol = "s3"
    path.fs.info.return_value = {"ETag": '"abc123"', "size": 2048}
    assert _kept.source_fingerprint(path) == "ETag:abc123:size:2048"
    path.open.assert_not_called()


def test_an_object_store_without_a_version_is_hashed(memory_root: str) -> None:
    path = storage.as_storage_path(f"{memory_root}/in/main.jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 bytes")
    assert _kept.source_fingerprint(path).startswith("sha256:")


# --- what a record says of its input: never its credentials -------------------------------------------

SIGNED = "https://shop:s3cr3t-pw@img.example.com/raw/shoe.jpg?X-Amz-Signature=f00dfeedcafe&Expires=99"


def test_the_record_keeps_no_credential_of_its_input(folder: Any, tmp_path: Path) -> None:
    """The folder is published: a record once held the URL verbatim, password and signature included."""
    names = kept_pair(folder, identity=SIGNED)
    text = (tmp_path / _kept.record_name(names[0])).read_text()
    for secret in ("s3cr3t-pw", "shop:", "f00dfeedcafe", "X-Amz-Signature", "Expires"):
        assert secret not in text
    record = json.loads(text)
    assert record["version"] == 2
    assert record["input"] == "https://img.example.com/raw/shoe.jpg"
    assert record["input_sha256"] == _kept.input_digest(SIGNED)


def test_an_input_is_recognised_by_the_digest_of_its_full_text(folder: Any) -> None:
    names = kept_pair(folder, identity=SIGNED)
    assert _kept.find_kept(folder, SIGNED, "sha256:aa", names) is not None
    # Signed anew, or under another password: another input, as when the record held the text.
    for other in (SIGNED.replace("f00dfeedcafe", "0ther5ig"), SIGNED.replace("s3cr3t-pw", "other")):
        assert _kept.find_kept(folder, other, "sha256:aa", names) is None


def _version_1_record(folder: Any, tmp_path: Path, identity: str) -> tuple[tuple[str, str], Path]:
    """A pair and its record as versions before 2 wrote them: the input verbatim."""
    names = kept_pair(folder, identity=identity)
    path = tmp_path / _kept.record_name(names[0])
    record = json.loads(path.read_text())
    del record["input_sha256"]
    path.write_text(json.dumps({**record, "version": 1, "input": identity}))
    return names, path


def test_a_version_1_record_still_matches_its_input_and_is_rewritten_without_it(
    folder: Any, tmp_path: Path
) -> None:
    """Reuse across the upgrade: an old record still saves the coin, and loses the credentials it held."""
    names, path = _version_1_record(folder, tmp_path, SIGNED)
    kept = _kept.find_kept(folder, SIGNED, "sha256:aa", names)
    assert kept is not None
    assert kept.job_id == "job-1"
    assert "s3cr3t-pw" not in path.read_text()
    assert "f00dfeedcafe" not in path.read_text()
    assert json.loads(path.read_text())["version"] == 2
    assert _kept.find_kept(folder, SIGNED, "sha256:aa", names) is not None  # and matches as version 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*names, path.name])


def test_a_version_1_record_of_another_input_is_no_record(folder: Any, tmp_path: Path) -> None:
    names, path = _version_1_record(folder, tmp_path, SIGNED)
    other = SIGNED.replace("f00dfeedcafe", "0ther5ig")
    assert _kept.find_kept(folder, other, "sha256:aa", names) is None
    assert json.loads(path.read_text())["version"] == 1  # not rewritten: it is not this input's


def test_a_version_1_record_that_cannot_be_rewritten_is_still_reused(
    folder: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    names, _ = _version_1_record(folder, tmp_path, SIGNED)

    def refuse(*args: Any) -> None:
        raise PermissionError("read-only")

    monkeypatch.setattr(_kept, "_write", refuse)
    assert _kept.find_kept(folder, SIGNED, "sha256:aa", names) is not None
    assert "s3cr3t-pw" not in caplog.text
    assert "f00dfeedcafe" not in caplog.text


# --- one listing of the folder instead of lookups per input ---------------------------------------------


@pytest.fixture
def store_folder(memory_root: str) -> Any:
    """A folder on an object-store-like file system (fsspec's memory store), where listing pays."""
    return storage.as_storage_path(f"{memory_root}/kept")


def test_a_listing_holds_only_the_wanted_files_with_their_sizes(store_folder: Any) -> None:
    names = kept_pair(store_folder)
    (store_folder / "unrelated.png").write_bytes(b"x" * 9)
    wanted = {*names, _kept.record_name(names[0]), "missing.png"}
    listing = _kept.list_folder(store_folder, wanted)
    assert listing is not None
    assert set(listing) == {*names, _kept.record_name(names[0])}
    assert (listing[names[0]], listing[names[1]]) == (7, 4)


def test_a_listed_folder_answers_as_the_lookups_do_without_asking_per_file(
    store_folder: Any, mocker: Any
) -> None:
    names = kept_pair(store_folder)
    other = storage.result_names("file:///data/catalogue/other/main.jpg")
    listing = _kept.list_folder(store_folder, {*names, *other, _kept.record_name(names[0])})
    exists = mocker.spy(type(store_folder), "exists")
    stat = mocker.spy(type(store_folder), "stat")
    kept = _kept.find_kept(store_folder, IDENTITY, "sha256:aa", names, listing)
    assert kept == _kept.find_kept(store_folder, IDENTITY, "sha256:aa", names)
    assert kept is not None
    exists.reset_mock()
    stat.reset_mock()
    assert _kept.find_kept(store_folder, IDENTITY, "sha256:aa", names, listing) is not None
    assert (
        _kept.find_kept(store_folder, "file:///data/catalogue/other/main.jpg", "sha256:aa", other, listing)
        is None
    )
    assert exists.call_count == stat.call_count == 0


def test_a_file_replaced_since_the_listing_is_judged_by_the_listed_size(store_folder: Any) -> None:
    names = kept_pair(store_folder)
    listing = _kept.list_folder(store_folder, {*names, _kept.record_name(names[0])})
    assert listing is not None
    listing[names[1]] = 5  # the mask the listing saw is not the one recorded
    assert _kept.find_kept(store_folder, IDENTITY, "sha256:aa", names, listing) is None
    del listing[names[1]]  # gone
    assert _kept.find_kept(store_folder, IDENTITY, "sha256:aa", names, listing) is None


def test_a_missing_folder_lists_as_empty_and_a_refused_listing_as_unknown(
    store_folder: Any, mocker: Any
) -> None:
    assert _kept.list_folder(store_folder / "nothing-here", {"a.png"}) == {}
    mocker.patch.object(type(store_folder.fs), "ls", side_effect=PermissionError("AccessDenied: ListBucket"))
    assert _kept.list_folder(store_folder, {"a.png"}) is None


def test_a_local_folder_is_not_listed(folder: Any) -> None:
    kept_pair(folder)
    assert _kept.list_folder(folder, {"a.png"}) is None
