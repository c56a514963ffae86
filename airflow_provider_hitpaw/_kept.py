"""Results kept from earlier runs, and when an input may reuse them instead of paying again.

Beside every kept pair lies a small record (``<stem>-<hash>.hitpaw.json``): which input made it (a digest
of its full text, and a form fit to show, without user name, password or query: the folder may be
published, and a signed URL's query is its credential), what that input was (its
:func:`source_fingerprint`), the job, and the size of both files. A later run with
``overwrite="skip"`` reuses the pair only when the record says it was made from this very input and both
files are still the ones it describes; a missing, unreadable, foreign or stale record means "segment
again", never a wrong reuse. The record lives in the output storage itself, so any worker on any Airflow
line finds it, and it is written after the pair (and removed before the pair is replaced): at no moment
does a record describe files it did not make.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from airflow_provider_hitpaw._api import url_without_query

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

#: 2 keeps a digest of the input instead of its text; a record of version 1 (the input verbatim) is still
#: read, and rewritten as version 2 once it has matched.
RECORD_VERSION: Final = 2
_VERBATIM_INPUT_VERSION: Final = 1
#: A record is a few hundred bytes; anything much larger was not written by us.
MAX_RECORD_BYTES: Final = 64 * 1024
#: Fields an object store reports that change whenever the object's bytes do.
_VERSION_FIELDS: Final = ("ETag", "etag", "md5Hash", "content_md5", "md5", "version_id", "VersionId")
_HASH_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True)
class KeptResult:
    """A pair an earlier run kept for an input, as its record describes it."""

    job_id: str
    res_path: str
    mask_path: str
    kept_at: str

    def as_result(self) -> dict[str, Any]:
        """The fields a reused input's result (XCom) carries: no coin spent, nothing fetched."""
        return {
            "job_id": self.job_id,
            "status": "COMPLETED",
            "consume_coins": 0,
            "reused": True,
            "res_path": self.res_path,
            "mask_path": self.mask_path,
            "res_url": None,
            "mask_url": None,
            "kept_at": self.kept_at,
        }


def record_name(cutout_name: str) -> str:
    """The record's name beside a cut-out named ``<stem>-<hash>.png``."""
    return cutout_name.removesuffix(".png") + ".hitpaw.json"


def source_fingerprint(path: ObjectStoragePath) -> str:
    """What a stored input *is*, cheaply: on an object store the version it reports (an ETag) and the
    size, where it reports one; otherwise (a local disk, ``memory://``) a SHA-256 of the bytes, which costs
    a read of the file, far less than a coin. A changed file gets another fingerprint."""
    protocol = path.protocol or ""
    if protocol not in ("", "file", "local"):
        try:
            info = path.fs.info(path.path)
        except Exception:  # an unreadable info is no version: the bytes decide below
            info = {}
        for name in _VERSION_FIELDS:
            value = info.get(name) if isinstance(info, dict) else None
            if value:
                return f"{name}:{str(value).strip(chr(34))}:size:{info.get('size')}"
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while piece := stream.read(_HASH_CHUNK):
            digest.update(piece)
    return f"sha256:{digest.hexdigest()}"


def list_folder(directory: ObjectStoragePath, wanted: set[str]) -> dict[str, int] | None:
    """The sizes of the ``wanted`` names that are files in ``directory``, from one listing of it.

    On an object store one listing (a request per thousand objects) replaces several requests per input;
    None where a listing is no cheaper (a local disk) or is refused: then each input is looked up alone.
    """
    from airflow_provider_hitpaw import storage

    if storage.is_local(directory):
        return None
    fs, path = directory.fs, directory.path.rstrip("/")
    nested = any("/" in name for name in wanted)
    # adlfs ignores refresh=True: a listing cached earlier in this process would be an old snapshot; and
    # s3fs and its kind would otherwise answer later existence checks from this one.
    invalidate = getattr(fs, "invalidate_cache", None)
    if invalidate is not None:
        invalidate(path)
    try:
        if nested:  # names below the folder's own folders (a mirrored catalogue): one listing of them all
            found = fs.find(path, detail=True, withdirs=False)
            entries = list(found.values()) if isinstance(found, dict) else []
        else:
            entries = fs.ls(path, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    except Exception as err:  # a role that may read objects but not list them, a store that cannot list
        shown = storage.storage_uri(directory)
        log.info("Listing %s failed (%s); looking up each input alone", shown, storage.store_words(err))
        return None
    finally:
        if invalidate is not None:
            invalidate(path)
    sizes: dict[str, int] = {}
    prefix = path.lstrip("/") + "/"
    for entry in entries:
        full = str(entry.get("name", "")).rstrip("/").lstrip("/")
        name = full.removeprefix(prefix) if nested else full.rsplit("/", 1)[-1]
        if name in wanted and entry.get("type", "file") == "file" and entry.get("size") is not None:
            sizes[name] = int(entry["size"])
    return sizes


def find_kept(
    directory: ObjectStoragePath,
    identity: str,
    fingerprint: str | None,
    names: tuple[str, str],
    listing: dict[str, int] | None = None,
) -> KeptResult | None:
    """The pair kept for ``identity`` in ``directory`` when its record proves it was made from this input
    (the same ``fingerprint``) and both files are the ones recorded; None otherwise (then: segment).

    ``listing`` (from :func:`list_folder`) answers which files exist and their sizes without a request.
    """
    from airflow_provider_hitpaw import storage

    record_path = directory / record_name(names[0])
    if listing is not None and record_path.name not in listing:
        return None
    try:
        if listing is not None:
            raw = directory.fs.cat_file(record_path.path, start=0, end=MAX_RECORD_BYTES + 1)
        elif not record_path.exists():
            return None
        else:
            with record_path.open("rb") as stream:
                raw = stream.read(MAX_RECORD_BYTES + 1)
        record = json.loads(raw) if len(raw) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError) as err:
        shown = storage.storage_uri(record_path)
        log.warning("The record %s cannot be read (%s); segmenting again", shown, storage.store_words(err))
        return None
    if not isinstance(record, dict) or not _describes(record, identity, fingerprint, names):
        return None
    targets = [directory / name for name in names]
    if listing is not None:
        sizes = [listing.get(name, -1) for name in names]
    else:
        try:
            sizes = [int(target.stat().st_size) if target.exists() else -1 for target in targets]
        except OSError:
            return None
    if sizes != [record["cutout_bytes"], record["mask_bytes"]]:
        return None  # a file went or was replaced since: the record no longer describes it
    if record["version"] == _VERBATIM_INPUT_VERSION:
        _rewrite_without_verbatim_input(directory, record, identity)
    return KeptResult(
        job_id=record["job_id"],
        res_path=storage.storage_uri(targets[0]),
        mask_path=storage.storage_uri(targets[1]),
        kept_at=str(record.get("kept_at") or ""),
    )


def _describes(
    record: dict[str, Any], identity: str, fingerprint: str | None, names: tuple[str, str]
) -> bool:
    sizes = [record.get("cutout_bytes"), record.get("mask_bytes")]
    return (
        _names_input(record, identity)
        and record.get("fingerprint") == fingerprint
        and [record.get("cutout"), record.get("mask")] == list(names)
        and all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes)
        and isinstance(record.get("job_id"), str)
        and bool(record["job_id"])
    )


def _names_input(record: dict[str, Any], identity: str) -> bool:
    """Whether ``record`` was written for ``identity``: by its digest, or verbatim before version 2."""
    version = record.get("version")
    if version == RECORD_VERSION:
        return bool(record.get("input_sha256") == input_digest(identity))
    if version == _VERBATIM_INPUT_VERSION:
        return bool(record.get("input") == _normal(identity))
    return False


def why_not_reused(
    directory: ObjectStoragePath, identity: str, fingerprint: str | None, names: tuple[str, str]
) -> str:
    """What the log says of an existing pair that ``skip`` does not reuse, and what happens to it."""
    record_path = directory / record_name(names[0])
    try:
        if not record_path.exists():
            return "exist without a record that they were made from this input; writing them anew"
        with record_path.open("rb") as stream:
            record = json.loads(stream.read(MAX_RECORD_BYTES + 1))
    except (OSError, ValueError):
        return "have a record that cannot be read; writing them anew"
    if not isinstance(record, dict) or not _names_input(record, identity):
        return "carry a record of another input; writing them anew"
    if record.get("fingerprint") != fingerprint:
        return (
            "were made from an older version of this input (it has changed since they were kept); "
            "replacing that stale pair"
        )
    return "no longer match their record (changed since they were kept); writing them anew"


def write_record(
    directory: ObjectStoragePath,
    identity: str,
    fingerprint: str | None,
    job_id: str,
    targets: list[ObjectStoragePath],
) -> None:
    """Describe a freshly kept pair, from a hidden sibling moved into place (never half a record)."""
    record = {
        **_input_fields(identity),
        "fingerprint": fingerprint,
        "job_id": job_id,
        "cutout": str(targets[0].name),
        "mask": str(targets[1].name),
        "cutout_bytes": int(targets[0].stat().st_size),
        "mask_bytes": int(targets[1].stat().st_size),
        "kept_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write(directory, record)


def input_digest(identity: str) -> str:
    """What a record keeps to recognise its input: the SHA-256 of its full text (credentials and query
    included, so a URL signed anew is another input, as before), never the text itself."""
    return hashlib.sha256(_normal(identity).encode("utf-8")).hexdigest()


def _input_fields(identity: str) -> dict[str, Any]:
    """The record's fields about its input: the digest compared, and a form without credentials to show
    (the one the logs show, :func:`~airflow_provider_hitpaw._api.url_without_query`)."""
    return {
        "version": RECORD_VERSION,
        "input": url_without_query(_normal(identity)),
        "input_sha256": input_digest(identity),
    }


def _rewrite_without_verbatim_input(
    directory: ObjectStoragePath, record: dict[str, Any], identity: str
) -> None:
    """A version 1 record that matched keeps its reuse, but not the credentials its input may carry: it
    is rewritten as version 2. Best effort: a storage that refuses the write still reuses the pair."""
    try:
        _write(directory, {**record, **_input_fields(identity)})
    except Exception as err:  # the pair is reused either way; only the old record stays
        log.warning(
            "Could not rewrite the record of %s without its input's text (%s)",
            record_name(str(record.get("cutout"))),
            type(err).__name__,
        )


def _write(directory: ObjectStoragePath, record: dict[str, Any]) -> None:
    """Write ``record`` beside its pair, from a hidden sibling moved into place (never half a record)."""
    from airflow_provider_hitpaw import storage

    target = directory / record_name(str(record["cutout"]))
    storage.write_replacing(target, json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def forget_record(directory: ObjectStoragePath, cutout_name: str) -> None:
    """Remove a pair's record before the pair is replaced: a crash midway then leaves no record at all
    (segment again next time), never an old record beside new files."""
    from airflow_provider_hitpaw import storage

    record_path = directory / record_name(cutout_name)
    if storage.exists(record_path):
        record_path.unlink()


def _normal(identity: str) -> str:
    return unicodedata.normalize("NFC", str(identity).strip())


def read_record(directory: ObjectStoragePath, cutout_name: str) -> dict[str, Any] | None:
    """The record beside a kept cut-out, or None when there is none readable."""
    try:
        with (directory / record_name(cutout_name)).open("rb") as stream:
            raw = stream.read(MAX_RECORD_BYTES + 1)
        record = json.loads(raw) if len(raw) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def note_in_record(directory: ObjectStoragePath, record: dict[str, Any], **fields: Any) -> None:
    """Add what was made from a kept pair (its finishes, its mask's figures) to the pair's record, so a
    later run neither makes nor measures it again."""
    _write(directory, {**record, **fields})
