"""Results kept from earlier runs, and when an input may reuse them instead of paying again.

Beside every kept pair lies a small record (``<stem>-<hash>.hitpaw.json``): which input made it, what that
input was (its :func:`source_fingerprint`), the job, and the size of both files. A later run with
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
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

RECORD_VERSION: Final = 1
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


def find_kept(
    directory: ObjectStoragePath, identity: str, fingerprint: str | None, names: tuple[str, str]
) -> KeptResult | None:
    """The pair kept for ``identity`` in ``directory`` when its record proves it was made from this input
    (the same ``fingerprint``) and both files are the ones recorded; None otherwise (then: segment)."""
    from airflow_provider_hitpaw import storage

    record_path = directory / record_name(names[0])
    try:
        if not record_path.exists():
            return None
        with record_path.open("rb") as stream:
            raw = stream.read(MAX_RECORD_BYTES + 1)
        record = json.loads(raw) if len(raw) <= MAX_RECORD_BYTES else None
    except (OSError, ValueError) as err:
        shown = storage.storage_uri(record_path)
        log.warning("The record %s cannot be read (%s); segmenting again", shown, err)
        return None
    if not isinstance(record, dict) or not _describes(record, identity, fingerprint, names):
        return None
    targets = [directory / name for name in names]
    try:
        sizes = [int(target.stat().st_size) if target.exists() else -1 for target in targets]
    except OSError:
        return None
    if sizes != [record["cutout_bytes"], record["mask_bytes"]]:
        return None  # a file went or was replaced since: the record no longer describes it
    return KeptResult(
        job_id=record["job_id"],
        res_path=storage.storage_uri(targets[0]),
        mask_path=storage.storage_uri(targets[1]),
        kept_at=str(record.get("kept_at") or ""),
    )


def _describes(
    record: dict[str, Any], identity: str, fingerprint: str | None, names: tuple[str, str]
) -> bool:
    if record.get("version") != RECORD_VERSION:
        return False
    sizes = [record.get("cutout_bytes"), record.get("mask_bytes")]
    return (
        record.get("input") == _normal(identity)
        and record.get("fingerprint") == fingerprint
        and [record.get("cutout"), record.get("mask")] == list(names)
        and all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes)
        and isinstance(record.get("job_id"), str)
        and bool(record["job_id"])
    )


def write_record(
    directory: ObjectStoragePath,
    identity: str,
    fingerprint: str | None,
    job_id: str,
    targets: list[ObjectStoragePath],
) -> None:
    """Describe a freshly kept pair, from a hidden sibling moved into place (never half a record)."""
    from airflow_provider_hitpaw import storage

    record = {
        "version": RECORD_VERSION,
        "input": _normal(identity),
        "fingerprint": fingerprint,
        "job_id": job_id,
        "cutout": str(targets[0].name),
        "mask": str(targets[1].name),
        "cutout_bytes": int(targets[0].stat().st_size),
        "mask_bytes": int(targets[1].stat().st_size),
        "kept_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    target = directory / record_name(str(targets[0].name))
    partial = directory / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        with partial.open("wb") as out:
            out.write(json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        storage.move_replacing(partial, target)
    finally:
        storage.remove_quietly(partial)


def forget_record(directory: ObjectStoragePath, cutout_name: str) -> None:
    """Remove a pair's record before the pair is replaced: a crash midway then leaves no record at all
    (segment again next time), never an old record beside new files."""
    from airflow_provider_hitpaw import storage

    record_path = directory / record_name(cutout_name)
    if storage.exists(record_path):
        record_path.unlink()


def _normal(identity: str) -> str:
    return unicodedata.normalize("NFC", str(identity).strip())
