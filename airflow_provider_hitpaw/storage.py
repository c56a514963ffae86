"""The user's storage: where results are copied to (HitPaw deletes them after 8 days) and inputs read from.

Paths are Airflow's :class:`~airflow.providers.common.compat.sdk.ObjectStoragePath`, so one code path
serves a local directory (``/data/out`` or ``file:///data/out``), ``memory://``, and any object store an
Airflow provider registers (``s3://bucket/prefix`` with an AWS connection, ``gs://``, ...).

What holds for every result kept here:

* each input has its own names, stable across runs: the readable stem of its file name and a short hash
  of the whole input (``sku-123/main.jpg`` gives ``main-<hash>.png`` and ``main-<hash>_mask.png``), so two
  inputs never share a file and a cut-out never has another input's mask's name;
* a cut-out and its mask land together or not at all, each only once it is downloaded whole and checked
  (a well-formed PNG, within the connection's size cap), from a hidden sibling (``.<name>.partial-<id>``);
* ``fail`` and ``skip`` never replace a kept file of another input's or another writer's: the target is
  created exclusively, so a writer that loses a race gets an error, not another image's file. On a local
  disk that is a hard link; on S3 a put with ``If-None-Match: *``, on Azure Blob the same header on the
  block list, on Google Cloud Storage an upload with ``ifGenerationMatch=0`` (each through the filesystem
  fsspec gives: s3fs, adlfs, gcsfs). Other stores (``memory://``, FTP, ...) have no such primitive: there
  the check and the move are two steps. Under ``skip``, a pair made from an older version of the input
  (its record says so) is replaced: it is this input's own, stale;
* an output folder is probed before anything is paid for: a missing bucket, refused credentials or a
  missing write permission fail the task at once, in the store's own words;
* the API key never leaves for the storage or the result host.

Airflow's object storage is imported inside the functions: DAG files import the operators, and the
operators import this module; parsing a DAG must stay cheap.
"""

from __future__ import annotations

import errno
import functools
import importlib.metadata
import itertools
import logging
import os
import re
import uuid
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw._names import ResultLayout
from airflow_provider_hitpaw._png import PngChecker, PngError
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawError,
    HitPawResponseError,
    HitPawStorageError,
    HitPawUntrustedAnswerError,
)
from airflow_provider_hitpaw.validation import validate_overwrite

if TYPE_CHECKING:
    from collections.abc import Mapping

    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

log = logging.getLogger(__name__)

_LOCAL_PROTOCOLS: Final = frozenset({"", "file", "local"})


def is_local(path: ObjectStoragePath) -> bool:
    """Whether ``path`` is on a local disk (where a hard link creates exclusively and a lookup is cheap)."""
    return (path.protocol or "") in _LOCAL_PROTOCOLS


_HTTP_PROTOCOLS: Final = frozenset({"http", "https"})
#: Bytes read from an input to recognise its format (WebP needs 12).
_SNIFF_BYTES: Final = 12
#: File-system errors that a retry cannot mend.
_PERMANENT_ERRNOS: Final = frozenset(
    {errno.ENAMETOOLONG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR, errno.EINVAL}
)
#: Errors an object store's filesystem raises for what a retry cannot mend (a missing bucket, a refused
#: permission, an operation the store does not offer, a connection it cannot be configured from),
#: whatever its errno.
_PERMANENT_TYPES: Final = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    NotImplementedError,
    ValueError,
)
#: The filesystems (by their package) whose targets are created with the store's own conditional
#: create (``pipe_file(..., mode="create")``): s3fs sends ``If-None-Match: *``, adlfs the same header
#: on the block list (or ``overwrite=False``), gcsfs ``ifGenerationMatch=0``. Each turns the store's
#: refusal (412, 409) into ``FileExistsError``.
_CONDITIONAL_CREATE_PACKAGES: Final = frozenset({"s3fs", "adlfs", "gcsfs"})
#: The name of the small object written, and removed at once, to prove an output folder takes files.
_PROBE_PREFIX: Final = ".hitpaw-write-check-"
#: How much of a store's message an error quotes.
_MAX_WORDS: Final = 400
_SIGNED: Final = re.compile(
    r"(?i)(sig|signature|x-amz-signature|x-goog-signature|x-amz-security-token|[\w-]*token|[\w-]*key"
    r"|[\w-]*secret|password|[\w-]*credential)(=|%3D)[^&;\s'\"]+"
)
#: A bearer token in a quoted header.
_BEARER: Final = re.compile(r"(?i)\bBearer\s+\S+")


# --- paths ------------------------------------------------------------------------------------------


def as_storage_path(
    value: str | os.PathLike[str] | ObjectStoragePath,
    conn_id: str | None = None,
    *,
    field: str = "output_path",
) -> ObjectStoragePath:
    """An :class:`ObjectStoragePath` for a URI (``s3://bucket/key``), a local path or a path object.

    A plain local path (``/data/out``) becomes ``file:///data/out``; a relative one is refused: it would
    mean a different place on every worker. ``conn_id`` is the Airflow connection of an object store. A
    scheme no filesystem is registered for raises :class:`HitPawConfigurationError` naming ``field``.
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(value, ObjectStoragePath):
        return value
    conflict = storage_stack_conflict(
        _installed_version("apache-airflow"), _installed_version("universal-pathlib")
    )
    if conflict is not None:
        raise HitPawConfigurationError(field, conflict)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise HitPawConfigurationError(field, f"must be a path or a URI, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise HitPawConfigurationError(field, "is empty (did a template render to nothing?)")
    if "://" not in text:
        text = "file://" + _absolute_local_path(os.path.expanduser(text), text, field)
    elif text.split("://", 1)[0].lower() in _LOCAL_PROTOCOLS:
        text = "file://" + _absolute_local_path(_local_uri_path(text, field), text, field)
    try:
        path = ObjectStoragePath(text, conn_id=conn_id) if conn_id else ObjectStoragePath(text)
        _ = path.fs  # an unknown scheme fails here, with the field named, not at the first write
    except (ValueError, ImportError) as err:
        shown = _api.url_without_query(text)  # a signed URL's query is its credential
        said = store_words(err)
        raise HitPawConfigurationError(field, f"{shown!r} is not usable storage ({said})") from None
    return path


def storage_stack_conflict(airflow_version: str | None, upath_version: str | None) -> str | None:
    """Why this Airflow cannot reach any storage with this ``universal-pathlib``, or None.

    Airflow 3.0 declares ``universal-pathlib>=0.2.2`` without a ceiling, but every ``ObjectStoragePath``
    fails there with 0.3 ("detected protocol file which is incompatible"); its constraint file pins 0.2.
    A dependency marker cannot depend on Airflow's version, so the check happens here, before paying.
    """
    if not airflow_version or not upath_version:
        return None
    if _release(airflow_version)[:2] != (3, 0) or _release(upath_version)[:2] < (0, 3):
        return None
    return (
        f"Airflow {airflow_version} cannot use universal-pathlib {upath_version}: every storage path fails "
        'with it. Install "universal-pathlib<0.3" (Airflow\'s constraint file for 3.0 pins it)'
    )


def _release(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split(".")[:3]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers)


@functools.cache
def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _local_uri_path(text: str, field: str) -> str:
    """The path of a ``file://`` (or ``local://``) URI, whose host may only be empty or ``localhost``:
    ``file://data/out`` is no absolute path but a host called "data", which would resolve against each
    worker's working directory."""
    parts = urlsplit(text)
    if parts.netloc not in ("", "localhost"):
        raise HitPawConfigurationError(
            field,
            f"{text!r} names the host {parts.netloc!r}; a local folder is written file:///{parts.netloc}{parts.path}",
        )
    return unquote(parts.path)


def _absolute_local_path(path: str, text: str, field: str) -> str:
    if not path or not os.path.isabs(path):
        raise HitPawConfigurationError(
            field,
            f"{text!r} is a relative path, which would resolve against each worker's working "
            f"directory ({os.getcwd()} here); give an absolute path or a URI such as file:///data/out",
        )
    return os.path.normpath(path)


def check_writable_folder(path: ObjectStoragePath, field: str = "output_path") -> None:
    """Refuse, before anything is paid for, an output folder that cannot take the results.

    On a local disk: a folder under a regular file or a device, or one this worker may not write to.
    Anywhere else (an object store), a small object is written into the folder and removed again: a
    missing bucket or container, refused credentials, or a missing permission to write or to remove
    (keeping results needs both) then fail the task now, in the store's own words
    (:class:`HitPawConfigurationError` naming ``field``), not after the jobs were paid for. A store that
    cannot be reached at the moment raises a retryable :class:`HitPawStorageError`.
    """
    if not is_local(path):
        _probe_writes(path, field)
        return
    folder = str(path.path)
    probe = folder
    while not os.path.lexists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise HitPawConfigurationError(field, f"{probe!r} is not a folder, so {folder!r} cannot be one")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise HitPawConfigurationError(field, f"this worker may not write to {probe!r}")


def _probe_writes(folder: ObjectStoragePath, field: str) -> None:
    """Write a few bytes under ``folder`` and remove them: one put and one delete, the cheapest proof
    that results can be kept there."""
    probe = folder / f"{_PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    shown = storage_uri(folder)
    steps: list[tuple[str, Any]] = [
        ("write a test object into", lambda: probe.fs.pipe_file(str(probe.path), b"hitpaw write check\n")),
        ("remove a test object from", lambda: probe.fs.rm_file(str(probe.path))),
    ]
    for what, step in steps:
        try:
            step()
        except HitPawError:
            raise
        except Exception as err:
            said = store_words(err)
            if isinstance(err, NotImplementedError):
                said = f"{type(probe.fs).__name__} does not write files ({said})"
            if what.startswith("remove"):
                said += f" (keeping results removes files too; {storage_uri(probe)} is left there)"
            if is_permanent(err):
                raise HitPawConfigurationError(
                    field, f"{shown} cannot take the results: the storage refused to {what} it: {said}"
                ) from None
            raise HitPawStorageError(
                f"{field}: {shown} could not be checked before keeping results (the storage did not answer "
                f"a test write: {said}); retried as a passing fault"
            ) from None


def store_words(err: BaseException) -> str:
    """What a storage said, for an error message: the exception's type and its own text, without the
    request ids, dates and XML bodies some stores add, nor a signed URL's signature."""
    text = str(err).strip()
    kept: list[str] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith("Content:"):
            break
        if line and not line.startswith(("RequestId:", "Time:")):
            kept.append(line)
    said = _BEARER.sub("Bearer REDACTED", _SIGNED.sub(lambda m: f"{m.group(1)}=REDACTED", " ".join(kept)))
    if len(said) > _MAX_WORDS:
        said = said[: _MAX_WORDS - 3] + "..."
    return f"{type(err).__name__}: {said}" if said else type(err).__name__


def is_permanent(err: BaseException) -> bool:
    """Whether a storage failure is one a retry cannot mend: a missing bucket or object, a refused
    permission, a 4xx answer (other than 408 and 429), an operation the store does not offer, a
    filesystem that cannot be made from its connection (``ValueError``). The exception's causes count
    too (adlfs wraps the Azure SDK's error)."""
    current: BaseException | None = err
    for _ in range(5):
        if current is None:
            break
        if isinstance(current, OSError) and current.errno is not None:
            if current.errno in _PERMANENT_ERRNOS:
                return True
        elif isinstance(current, _PERMANENT_TYPES):
            return True
        status = getattr(current, "status_code", None)
        if status is None:
            status = getattr(current, "code", None)
        if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429):
            return True
        current = current.__cause__ or current.__context__
    return False


def storage_uri(path: ObjectStoragePath) -> str:
    """The path as a plain URI string, the same on Airflow 2.11 and 3.x and without the connection id
    (``s3://bucket/key``, ``file:///data/out/a.png``, ``memory://bucket/a.png``)."""
    protocol = path.protocol or "file"
    inner = str(path.path)
    if protocol in _HTTP_PROTOCOLS:
        return inner  # the path of an http(s) path is its whole URL
    if protocol in _LOCAL_PROTOCOLS:
        return "file://" + inner
    return f"{protocol}://{inner.lstrip('/')}"


def input_identity(source: Any, conn_id: str | None = None) -> str:
    """The text that identifies an input across runs: a URL as given, a stored file by its URI (so that
    ``/data/a.jpg`` and ``file:///data/a.jpg`` are one input)."""
    text = str(source).strip() if not hasattr(source, "protocol") else ""
    if text.startswith(("http://", "https://")):
        return text
    return storage_uri(as_storage_path(source, conn_id, field="source_path"))


def same_image_url(submitted: str, original: str) -> bool:
    """Same scheme, host, port, percent-decoded path; queries only if both have one and ours is unsigned."""
    try:
        ours, theirs = urlsplit(submitted.strip()), urlsplit(original.strip())
        ours_port, theirs_port = _port(ours), _port(theirs)
    except ValueError:
        return False
    if (
        ours.scheme.lower() != theirs.scheme.lower()
        or _host(ours.hostname) != _host(theirs.hostname)
        or ours_port != theirs_port
        or _canonical_path(ours.path) != _canonical_path(theirs.path)
    ):
        return False
    if not ours.query or not theirs.query or _api.is_signed_query(ours.query):
        return True  # HitPaw may drop a query, and may re-encode a signature: the path names the object
    return _canonical_query(ours.query) == _canonical_query(theirs.query)


def check_answered_for(job_id: str, original_url: str | None, submitted: str) -> None:
    """Refuse the results of a job whose ``original_url`` is not the image this task submitted
    (:func:`same_image_url`): one job id answered for two images (a broken or hostile base URL) must not
    give one input another's cut-out. A status without ``original_url`` is let through, and logged."""
    if not original_url:
        log.warning("HitPaw did not say which image job %r segmented; it cannot be checked", job_id)
        return
    if same_image_url(submitted, original_url):
        return
    raise HitPawUntrustedAnswerError(
        f"job {job_id!r} is HitPaw's answer for {_api.url_without_query(original_url)!r}, but this task "
        f"submitted {_api.url_without_query(submitted)!r}: one job cannot be two images (a broken or "
        "hostile base URL?); its results are not kept. The image this task sent may have been charged"
    )


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _port(parts: Any) -> int | None:
    return parts.port if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme.lower())


def _host(hostname: str | None) -> str:
    """A host name as DNS compares it: lower case, an internationalised name in its ASCII form."""
    name = (hostname or "").rstrip(".").lower()
    try:
        return name.encode("idna").decode("ascii")
    except UnicodeError:
        return name


def _canonical_part(text: str) -> str:
    """One path segment or query item with every byte but the unreserved ones percent-encoded, so that
    ``é``, ``%C3%A9`` and ``%c3%a9`` are one, while ``%2F`` stays apart from a ``/``."""
    return quote(unquote_to_bytes(text), safe="")


def _canonical_path(path: str) -> str:
    return "/".join(_canonical_part(segment) for segment in (path or "/").split("/"))


def _canonical_query(query: str) -> list[tuple[str, str]]:
    items = []
    for item in query.split("&"):
        if item:
            key, _, value = item.partition("=")
            items.append((_canonical_part(key), _canonical_part(value)))
    return sorted(items)


def result_names(source: str, layout: ResultLayout | None = None) -> tuple[str, str]:
    """The names of an input's cut-out and mask below ``output_path`` (see :mod:`._names`): flat
    ``<stem>-<hash>.png`` and ``<stem>-<hash>_mask.png`` unless ``layout`` mirrors the input's folders."""
    return (layout or ResultLayout()).names(source)


def result_folder(
    directory: ObjectStoragePath, source: str, layout: ResultLayout | None = None
) -> tuple[ObjectStoragePath, tuple[str, str]]:
    """The folder an input's pair and record go in (``directory`` itself, or one below it), and the
    pair's names there."""
    cutout, mask = result_names(source, layout)
    below, _, cutout_name = cutout.rpartition("/")
    return (directory / below if below else directory), (cutout_name, mask.rpartition("/")[2])


def check_unique_names(
    sources: list[str], layout: ResultLayout | None = None, finishes: tuple[Any, ...] = ()
) -> None:
    """Refuse a set of inputs two of which would share a result file, finishes included (before anything
    is paid for)."""
    if finishes:
        from airflow_provider_hitpaw._finish import finish_name

        def made_beside(cutout: str) -> list[str]:
            return [finish_name(cutout, finish) for finish in finishes]

        (layout or ResultLayout()).check_unique(sources, made_beside)
    else:
        (layout or ResultLayout()).check_unique(sources)


# --- results: download and keep ------------------------------------------------------------------------


def persist_job_results(
    status: Mapping[str, Any] | _api.TaskStatus,
    source: str,
    output_path: str | ObjectStoragePath,
    *,
    hook: HitPawHook,
    overwrite: str = "overwrite",
    conn_id: str | None = None,
    fingerprint: str | None = None,
    layout: ResultLayout | None = None,
) -> dict[str, str]:
    """Copy a completed job's cut-out and mask into the directory ``output_path``; return
    ``{"res_path": uri, "mask_path": uri}`` (plain URI strings, for XCom).

    The files are named by :func:`result_names` after ``source``, the input's identity, and ``layout``
    (flat by default; or below the input's own folders). Both are
    downloaded and checked before either is moved into place, and either both land or neither does.

    A record of what made the pair is written beside it (see :mod:`~airflow_provider_hitpaw._kept`), so
    that a later run with ``overwrite="skip"`` can reuse the pair without submitting the input again.

    :param overwrite: ``"overwrite"`` replaces an existing pair; ``"skip"`` keeps an existing pair whose
        record says it was made from this input (``fingerprint``) and downloads nothing, replaces a pair
        whose record says it was made from an older version of this input (stale), and writes a pair
        without such a record anew (nothing proves it is this input's); ``"fail"`` raises
        :class:`HitPawConfigurationError` naming ``output_path`` when either file exists, unless they are
        the pair this very job kept for this input (its record names the job: a retry must not fail on
        its own files). Under ``fail``
        and ``skip`` the files are created exclusively: a writer that loses a race for the names gets an
        error (``skip``: keeps the winner's complete pair), never another writer's file swapped.
    :param hook: the hook whose connection's limits and address rules the downloads follow.
    :param fingerprint: what the input is (:func:`~airflow_provider_hitpaw._kept.source_fingerprint` for
        a stored file; None for a URL, which is its own identity), recorded beside the pair.
    """
    from airflow_provider_hitpaw import _kept

    policy = validate_overwrite(overwrite)
    values = status.to_dict() if isinstance(status, _api.TaskStatus) else dict(status)
    job_id = str(values.get("job_id") or "")
    urls = []
    for name in ("res_url", "mask_url"):
        value = values.get(name)
        if not isinstance(value, str) or not value:
            raise HitPawResponseError(f"job {job_id or '(unknown)'!r} has no {name} to copy")
        urls.append(value)
    folder, names = result_folder(as_storage_path(output_path, conn_id, field="output_path"), source, layout)
    targets = [folder / name for name in names]
    result = {"res_path": storage_uri(targets[0]), "mask_path": storage_uri(targets[1])}
    existing = [target for target in targets if exists(target)]
    for target in existing:
        if _is_folder(target):
            raise HitPawStorageError(f"{storage_uri(target)} is a folder, not a file", retryable=False)
    if existing and policy == "fail":
        if job_id and _kept_by_job(folder, source, fingerprint, names, job_id):
            log.info(
                "%s and its mask were kept by job %r already; kept as they are", result["res_path"], job_id
            )
            return result
        raise _exists_error(existing[0], policy)
    commit = policy
    if policy == "skip" and len(existing) == len(targets):
        if _kept.find_kept(folder, source, fingerprint, names) is not None:
            log.info("%s and its mask exist; kept as they are (overwrite='skip')", result["res_path"])
            return result
        log.warning(
            "%s and its mask %s",
            result["res_path"],
            _kept.why_not_reused(folder, source, fingerprint, names),
        )
        commit = "overwrite"
    elif policy == "skip" and existing:
        # Half a pair is nothing kept: the other half of an earlier run's interrupted commit. Its name
        # holds this input's hash, so it is this input's own file, and the pair is written anew.
        log.warning("%s exists without its partner; writing the pair anew", storage_uri(existing[0]))
        commit = "overwrite"
    if is_local(targets[0]):
        _storage_call(lambda: folder.mkdir(parents=True, exist_ok=True), folder)
    partials: list[ObjectStoragePath] = []
    try:
        for url, target in zip(urls, targets, strict=True):
            partials.append(_download_checked(hook, url, target))
        if commit == "overwrite":
            _storage_call(lambda: _kept.forget_record(folder, names[0]), folder)
        kept = _commit_pair(partials, targets, commit, policy)
    finally:
        for partial in partials:
            remove_quietly(partial)
    if not kept:
        log.info(
            "%s and its mask appeared meanwhile; kept as they are (overwrite='skip')", result["res_path"]
        )
        return result
    try:
        _kept.write_record(folder, source, fingerprint, job_id, targets)
    except Exception as err:  # the pair is kept; without its record a later run only segments it again
        log.warning("Could not write the record of %s (%s): a later run segments it again", names[0], err)
    return result


def refuse_existing_results(
    output_path: str | ObjectStoragePath,
    source: str,
    *,
    conn_id: str | None = None,
    fingerprint: str | None = None,
    own_job_id: str | None = None,
    layout: ResultLayout | None = None,
) -> None:
    """Under ``overwrite="fail"``, refuse an input whose cut-out or mask is in ``output_path`` already,
    before anything is paid for (the same :class:`HitPawConfigurationError` the write would raise later).

    Files whose record says job ``own_job_id`` kept them for this input (``source``, ``fingerprint``) are
    accepted: they are what an earlier try of the same task kept of the job it is about to wait for again.
    """
    directory, names = result_folder(
        as_storage_path(output_path, conn_id, field="output_path"), source, layout
    )
    existing = [directory / name for name in names if exists(directory / name)]
    if not existing:
        return
    if own_job_id and _kept_by_job(directory, source, fingerprint, names, own_job_id):
        log.info(
            "%s and its mask are what job %r, of an earlier try of this task, kept; accepted",
            storage_uri(existing[0]),
            own_job_id,
        )
        return
    raise _exists_error(existing[0], "fail")


def _kept_by_job(
    directory: ObjectStoragePath, source: str, fingerprint: str | None, names: tuple[str, str], job_id: str
) -> bool:
    """Whether the pair in ``directory`` is the one ``job_id`` kept for this input, unchanged since (its
    record says so, and both files still have the sizes it recorded)."""
    from airflow_provider_hitpaw import _kept

    found = _storage_call(lambda: _kept.find_kept(directory, source, fingerprint, names), directory)
    return found is not None and found.job_id == job_id


def not_kept_error(err: BaseException, job_id: str, status: Mapping[str, Any]) -> HitPawStorageError:
    """The failure of a completed (paid) job whose results could not be kept: it says which job, that it
    completed, and where its results still are (HitPaw's links without their query, which may be their
    credential), so that nothing paid for is lost with the try. As retryable as the storage's failure."""
    said = err.message if isinstance(err, HitPawError) else store_words(err)
    retryable = err.retryable if isinstance(err, HitPawError) else not is_permanent(err)
    links = [
        f"{name} {_api.url_without_query(value)}"
        for name in ("res_url", "mask_url")
        if isinstance(value := status.get(name), str) and value
    ]
    where = (
        f"its results stay at HitPaw for 8 days ({', '.join(links)}; poll the job for the full links)"
        if links
        else "HitPaw keeps its results for 8 days (poll the job for their links)"
    )
    return HitPawStorageError(
        f"job {job_id!r} completed, but its results could not be kept in output_path: {said}; {where}",
        retryable=retryable,
    )


def _download_checked(hook: HitPawHook, url: str, target: ObjectStoragePath) -> ObjectStoragePath:
    """Download ``url`` into a hidden sibling of ``target``, retried as one request is; return the sibling
    once it holds a whole, well-formed PNG. A failure leaves no sibling behind."""
    from airflow_provider_hitpaw.hooks._transport import retry_sync

    shown = _api.url_without_query(url)
    attempts = hook.download_attempts(f"Copying {shown}")

    def attempt() -> ObjectStoragePath:
        partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
        checker = PngChecker()
        try:
            out = _storage_call(lambda: partial.open("wb"), partial)

            def write(piece: bytes) -> None:
                try:
                    checker.feed(piece)
                except PngError as err:
                    raise HitPawResponseError(f"{shown} is not a PNG: {err}") from None
                _storage_call(lambda: out.write(piece), partial)

            try:
                size = hook.download_once(url, write, attempts)
            except BaseException:
                _close_quietly(out)
                raise
            # An object store uploads on close: a bucket that vanished, a write refused, says so here.
            _storage_call(out.close, partial)
            try:
                checker.finish()
            except PngError as err:
                raise HitPawResponseError(f"{shown} is not a PNG: {err}") from None
        except BaseException:
            remove_quietly(partial)
            raise
        log.info("Copied %s (%d bytes)", shown, size)
        return partial

    return retry_sync(attempt, attempts)


def _close_quietly(stream: Any) -> None:
    """Close a partial download after a failure; the failure matters more than what closing says."""
    try:
        stream.close()
    except Exception:
        log.debug("Closing a partial download failed too", exc_info=True)


def _commit_pair(
    partials: list[ObjectStoragePath], targets: list[ObjectStoragePath], commit: str, policy: str
) -> bool:
    """Move both downloads into place, or neither; False when ``skip`` found a pair another writer made
    meanwhile (which is then kept). ``commit`` is how (``overwrite``, or exclusively), ``policy`` what the
    user asked for (named in errors)."""
    if commit == "overwrite":
        _replace_pair(partials, targets)
        return True
    placed: list[ObjectStoragePath] = []
    try:
        for partial, target in zip(partials, targets, strict=True):
            if not _create_exclusively(partial, target):
                if policy == "skip" and not placed and all(exists(t) for t in targets):
                    return False
                raise _exists_error(target, policy)
            placed.append(target)
    except BaseException:
        for target in placed:  # this writer's own files only: neither of the pair stays
            remove_quietly(target)
        raise
    return True


def _replace_pair(partials: list[ObjectStoragePath], targets: list[ObjectStoragePath]) -> None:
    """Replace both files, or leave both as they were: the files being replaced are kept aside until
    both new ones are in place, and put back if either cannot be placed."""
    local = is_local(targets[0])
    aside: list[tuple[ObjectStoragePath, ObjectStoragePath]] = []
    placed: list[ObjectStoragePath] = []
    try:
        for target in targets:
            if exists(target):
                backup = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
                if local:  # a second name for the old file: the replace below stays atomic
                    _storage_call(lambda t=target, b=backup: os.link(str(t.path), str(b.path)), target)  # type: ignore[misc]
                else:
                    _storage_call(lambda t=target, b=backup: _move_object(t, b), target)  # type: ignore[misc]
                aside.append((target, backup))
        for partial, target in zip(partials, targets, strict=True):
            if local:
                _storage_call(lambda p=partial, t=target: os.replace(str(p.path), str(t.path)), target)  # type: ignore[misc]
            else:
                _storage_call(lambda p=partial, t=target: _move_object(p, t), target)  # type: ignore[misc]
            placed.append(target)
    except BaseException:
        placed_ids = {id(target) for target in placed}
        aside_ids = {id(target) for target, _ in aside}
        for target in placed:
            if id(target) not in aside_ids:
                remove_quietly(target)  # a new file that had no old one
        for target, backup in aside:
            if local and id(target) not in placed_ids:
                remove_quietly(backup)  # never replaced: the old file is still there
                continue
            try:
                if local:
                    os.replace(str(backup.path), str(target.path))
                else:
                    _move_object(backup, target)
            except Exception:
                log.warning(
                    "Could not put %s back from %s", storage_uri(target), storage_uri(backup), exc_info=True
                )
        raise
    for _, backup in aside:
        remove_quietly(backup)


def write_replacing(target: ObjectStoragePath, data: bytes) -> None:
    """Write ``data`` to ``target`` whole or not at all: into a hidden sibling, then moved onto its name."""
    partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
    try:
        with partial.open("wb") as out:
            out.write(data)
        move_replacing(partial, target)
    finally:
        remove_quietly(partial)


def move_replacing(partial: ObjectStoragePath, target: ObjectStoragePath) -> None:
    """Move a finished hidden sibling onto ``target``, replacing what is there (atomically on a local disk;
    on an object store a copy on the server, whole or not at all, then the sibling removed)."""
    if is_local(target):
        _storage_call(lambda: os.replace(str(partial.path), str(target.path)), target)
    else:
        _storage_call(lambda: _move_object(partial, target), target)


def _move_object(source: ObjectStoragePath, target: ObjectStoragePath) -> None:
    """Move an object within its store: a copy on the server, then the source removed. That is what every
    object store's rename is; done here so that no filesystem first tries an API the store may lack
    (gcsfs tries GCS's ``moveTo``, which emulators refuse after a minute of retries)."""
    fs = target.fs
    fs.cp_file(str(source.path), str(target.path))
    fs.rm_file(str(source.path))


def _create_exclusively(partial: ObjectStoragePath, target: ObjectStoragePath) -> bool:
    """Put ``partial`` at ``target`` unless something is there; False if something was.

    On a local disk a hard link does it atomically; on S3, Azure Blob and Google Cloud Storage the
    store's conditional create does (:func:`has_conditional_create`). Elsewhere the check and the move
    are two steps, and two writers racing for one name can both pass the check.
    """
    if is_local(target):
        try:
            os.link(str(partial.path), str(target.path))
        except FileExistsError:
            return False
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise _storage_error(err, target) from None
            # A file system without hard links: exclusive creation of the name, then the move.
            try:
                fd = os.open(str(target.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            os.close(fd)
            os.replace(str(partial.path), str(target.path))
        return True
    if exists(target):
        return False
    if has_conditional_create(target):
        return _create_on_store(partial, target)
    _storage_call(lambda: _move_object(partial, target), target)
    return True


def has_conditional_create(path: ObjectStoragePath) -> bool:
    """Whether ``path``'s store is written through a filesystem that creates an object only when none
    is there, in one request the store judges (s3fs, adlfs, gcsfs releases that know ``mode="create"``).
    Whether the server honours it is the server's part: S3 and Azure Blob do, and so do moto and
    Azurite; Google Cloud Storage does, the gcp-storage-emulator does not."""
    fs_class = type(path.fs)
    name = f"{fs_class.__module__}.{fs_class.__qualname__}"
    if name not in _CREATE_MODE_KNOWN:
        _CREATE_MODE_KNOWN[name] = _knows_create_mode(fs_class)
    return _CREATE_MODE_KNOWN[name]


#: botocore learnt PutObject's IfNoneMatch in this release; s3fs drops the header with an older one.
_BOTOCORE_WITH_IF_NONE_MATCH: Final = (1, 35, 21)


#: What :func:`_knows_create_mode` found, by filesystem class: it reads source code, once per class.
_CREATE_MODE_KNOWN: dict[str, bool] = {}


def _knows_create_mode(fs_class: Any) -> bool:
    """Whether this filesystem class's put honours ``mode="create"``: older s3fs, gcsfs and adlfs
    releases, which the providers still allow, take the argument silently and overwrite."""
    import inspect

    package = fs_class.__module__.split(".", 1)[0]
    if package not in _CONDITIONAL_CREATE_PACKAGES:
        return False
    try:
        source = inspect.getsource(fs_class._pipe_file)
    except (AttributeError, OSError, TypeError):
        return False
    if '"create"' not in source and "'create'" not in source and "mode" not in source.split(")", 1)[0]:
        return False
    if package == "s3fs":
        botocore = _installed_version("botocore")
        return botocore is not None and _release(botocore) >= _BOTOCORE_WITH_IF_NONE_MATCH
    return True


def _create_on_store(partial: ObjectStoragePath, target: ObjectStoragePath) -> bool:
    """Copy ``partial``'s bytes to ``target`` with the store's conditional create; False when the store
    says something is there. One request decides, so of two writers racing for the name one loses."""
    data = _storage_call(lambda: partial.fs.cat_file(str(partial.path)), partial)
    try:
        target.fs.pipe_file(str(target.path), data, mode="create")
    except FileExistsError:
        return False
    except HitPawError:
        raise
    except Exception as err:
        raise _storage_error(err, target) from None
    return True


def _storage_call(call: Any, path: ObjectStoragePath) -> Any:
    """Run a storage operation; its failure becomes a :class:`HitPawStorageError` naming the path (an
    object store's filesystem raises more than ``OSError``: adlfs lets the Azure SDK's errors through)."""
    try:
        return call()
    except HitPawError:
        raise
    except Exception as err:
        raise _storage_error(err, path) from None


def _storage_error(err: BaseException, path: ObjectStoragePath) -> HitPawStorageError:
    return HitPawStorageError(
        f"the storage refused {storage_uri(path)}: {store_words(err)}", retryable=not is_permanent(err)
    )


def _exists_error(target: ObjectStoragePath, policy: str) -> HitPawConfigurationError:
    if policy == "skip":
        return HitPawConfigurationError(
            "output_path",
            f"{storage_uri(target)} was written by another task at the same moment (overwrite='skip'); "
            "its own pair is kept",
        )
    return HitPawConfigurationError(
        "output_path",
        f"{storage_uri(target)} already exists (overwrite='fail'); remove it, or set overwrite to "
        "'overwrite' or 'skip'",
    )


def _is_folder(path: ObjectStoragePath) -> bool:
    try:
        return bool(path.is_dir())
    except OSError:
        return False


def exists(path: ObjectStoragePath) -> bool:
    """Whether something is at ``path``; a storage failure is a :class:`HitPawStorageError`."""
    return bool(_storage_call(path.exists, path))


def remove_quietly(path: ObjectStoragePath) -> None:
    """Remove a leftover of ours; a failure is logged, not raised (the error that left it matters more)."""
    try:
        if path.exists():
            path.unlink()
    except Exception:  # the original error matters more than a leftover we could not clean
        log.warning("Could not remove %s", storage_uri(path), exc_info=True)


# --- inputs: read for an upload -----------------------------------------------------------------------


def read_source(source: str | ObjectStoragePath, conn_id: str | None = None) -> tuple[str, str, int]:
    """Check an input before anything is uploaded: return ``(filename, content_type, size)``.

    The content type comes from the extension (``.jpg``/``.jpeg``, ``.png``, ``.webp``) and must agree
    with what the file's first bytes show; a missing file, another format, or a mismatch (a PNG named
    ``.jpg``) raises :class:`HitPawConfigurationError` naming ``source_path``.
    """
    path = as_storage_path(source, conn_id, field="source_path")
    uri = storage_uri(path)
    filename = str(path.name)
    content_type = _api.content_type_for(filename, field="source_path")
    if is_local(path):
        if not path.is_file():
            raise HitPawConfigurationError("source_path", f"there is no file at {uri}")
        size = int(path.stat().st_size)
    else:
        size = _stored_size(path, uri)
    with path.open("rb") as stream:
        head = stream.read(_SNIFF_BYTES)
    sniffed = _api.sniff_image_type(head)
    if sniffed is None:
        what = "is empty" if not head else "does not start like a JPEG, PNG or WebP image"
        raise HitPawConfigurationError("source_path", f"{uri} {what}")
    if sniffed != content_type:
        raise HitPawConfigurationError(
            "source_path",
            f"{uri} is named as {content_type} but its bytes are {sniffed}; rename it to match its format",
        )
    return filename, content_type, size


def _stored_size(path: ObjectStoragePath, uri: str) -> int:
    """The size of an input in an object store; what the store said when there is none, or when it may
    not be read."""
    try:
        info = path.fs.info(str(path.path))
    except FileNotFoundError as err:
        raise HitPawConfigurationError(
            "source_path", f"there is no file at {uri} ({_why_missing(path, err)})"
        ) from None
    except Exception as err:
        if is_permanent(err):
            raise HitPawConfigurationError(
                "source_path", f"{uri} cannot be read: {store_words(err)}"
            ) from None
        raise HitPawStorageError(f"{uri} could not be read: {store_words(err)}") from None
    if not isinstance(info, dict) or info.get("type") != "file":
        raise HitPawConfigurationError("source_path", f"there is no file at {uri} (it is a folder)")
    return int(info.get("size") or 0)


def _why_missing(path: ObjectStoragePath, err: BaseException) -> str:
    """A missing object's bucket (or container) may be missing too: say which, in the store's words."""
    bucket = str(path.path).lstrip("/").split("/", 1)[0]
    if bucket and bucket != str(path.path).strip("/"):
        try:
            path.fs.info(bucket)
        except FileNotFoundError:
            return f"the bucket or container {bucket!r} does not exist: {store_words(err)}"
        except Exception:  # the object's own answer says enough
            log.debug("Could not look at %s", bucket, exc_info=True)
    return store_words(err)


def open_source(source: str | ObjectStoragePath, conn_id: str | None = None) -> BinaryIO:
    """The input opened for reading, to be streamed by :meth:`HitPawHook.upload` (close it after, or use
    it as a context manager). Check it with :func:`read_source` first."""
    path = as_storage_path(source, conn_id, field="source_path")
    return cast("BinaryIO", path.open("rb"))
