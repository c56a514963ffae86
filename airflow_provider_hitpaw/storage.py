"""The user's storage: where results are copied to (HitPaw deletes them after 8 days) and inputs read from.

Paths are Airflow's :class:`~airflow.providers.common.compat.sdk.ObjectStoragePath`, so one code path
serves a local directory (``/data/out`` or ``file:///data/out``), ``memory://``, and any object store an
Airflow provider registers (``s3://bucket/prefix`` with an AWS connection, ``gs://``, ...).

Two promises hold for every result written here:

* no reader ever sees half a file: bytes go to a hidden sibling (``.<name>.partial-<id>``) that is moved
  into place only once the download is complete and checked; any failure removes it;
* the API key never leaves for the storage or the result host: HitPaw's result links are public and are
  fetched without it, and uploads go to a signed URL.

Airflow's object storage and requests are imported inside the functions: DAG files import the operators,
and the operators import this module; parsing a DAG must stay cheap.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast
from urllib.parse import unquote, urlsplit

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawConnectionError,
    HitPawError,
    HitPawResponseError,
)
from airflow_provider_hitpaw.validation import validate_overwrite

if TYPE_CHECKING:
    from collections.abc import Mapping

    import requests
    from airflow.providers.common.compat.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
#: Seconds to connect, and to wait for the next bytes of a download.
DEFAULT_TIMEOUT: Final = (10.0, 60.0)

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_LOCAL_PROTOCOLS: Final = frozenset({"", "file", "local"})
_HTTP_PROTOCOLS: Final = frozenset({"http", "https"})
#: Bytes read from an input to recognise its format (WebP needs 12).
_SNIFF_BYTES: Final = 12
_MAX_STEM_LENGTH: Final = 150
_UNSAFE: Final = re.compile(r"[^\w.\-]+")


def _pause(seconds: float) -> None:
    """The only wait of this module, so that tests can record back-off delays instead of sleeping them."""
    time.sleep(seconds)


# --- paths ------------------------------------------------------------------------------------------


def as_storage_path(
    value: str | os.PathLike[str] | ObjectStoragePath,
    conn_id: str | None = None,
    *,
    field: str = "output_path",
) -> ObjectStoragePath:
    """An :class:`ObjectStoragePath` for a URI (``s3://bucket/key``), a local path or a path object.

    A plain local path (``/data/out``) becomes ``file:///data/out``; a relative one is made absolute
    against the current directory. ``conn_id`` is the Airflow connection of an object store. A scheme no
    filesystem is registered for raises :class:`HitPawConfigurationError` naming ``field``.
    """
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    if isinstance(value, ObjectStoragePath):
        return value
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise HitPawConfigurationError(field, f"must be a path or a URI, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise HitPawConfigurationError(field, "is empty (did a template render to nothing?)")
    if "://" not in text:
        text = "file://" + os.path.abspath(os.path.expanduser(text))
    try:
        path = ObjectStoragePath(text, conn_id=conn_id) if conn_id else ObjectStoragePath(text)
        _ = path.fs  # an unknown scheme fails here, with the field named, not at the first write
    except ValueError as err:
        raise HitPawConfigurationError(field, f"{text!r} is not usable storage ({err})") from None
    return path


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


def result_names(source: str, job_id: str) -> tuple[str, str]:
    """The file names of an input's cut-out and mask: ``shoe-042.jpg`` gives ``shoe-042.png`` and
    ``shoe-042_mask.png``.

    ``source`` may be a URL (its query and fragment are ignored), an object-store URI or a local path.
    Characters that are not letters, digits, ``.``, ``-`` or ``_`` become ``_``. When the input has no
    usable name (``https://cdn/`` or a name of symbols only), the job id names the files.
    """
    stem = _safe_stem(_base_name(source)) or _safe_stem(job_id) or "result"
    return f"{stem}.png", f"{stem}_mask.png"


def _base_name(source: Any) -> str:
    text = str(source or "").strip()
    if "://" in text:
        text = unquote(urlsplit(text).path)
    return text.replace("\\", "/").rsplit("/", 1)[-1]


def _safe_stem(name: str) -> str:
    name = str(name or "")
    dot = name.rfind(".")
    if dot >= 0:
        name = name[:dot]
    stem = _UNSAFE.sub("_", name).lstrip(".-").rstrip(".")[:_MAX_STEM_LENGTH]
    return stem if any(ch.isalnum() for ch in stem) else ""


# --- results: download and persist --------------------------------------------------------------------


def persist_result(
    url: str,
    target: ObjectStoragePath,
    *,
    overwrite: str = "overwrite",
    session: requests.Session | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    retry_policy: _api.RetryPolicy | None = None,
) -> ObjectStoragePath:
    """Copy the PNG at ``url`` (a HitPaw result link) to ``target`` and return ``target``.

    The download is streamed ``chunk_size`` bytes at a time (memory stays flat, whatever the size) into a
    hidden sibling of ``target``, which is moved into place once the HTTP status, the PNG signature and
    the ``Content-Length`` all check out; on any failure the sibling is removed and ``target`` is left as
    it was. Transient faults (network, HTTP 5xx and 429, a cut-short body) are retried per
    ``retry_policy`` (the hooks' default when None), each try from the start.

    :param overwrite: ``"overwrite"`` replaces an existing ``target``; ``"skip"`` leaves it untouched and
        downloads nothing; ``"fail"`` raises :class:`HitPawConfigurationError` naming ``output_path``.
    :param session: a :class:`requests.Session` to download with (its TLS settings are used). The
        ``Apikey`` header is removed from every download even if the session carries one.
    """
    policy = validate_overwrite(overwrite)
    scheme = urlsplit(url).scheme if isinstance(url, str) else ""
    if scheme not in _HTTP_PROTOCOLS:
        raise HitPawConfigurationError("url", f"must be an http(s) URL, got {str(url)[:100]!r}")
    if chunk_size < 1:
        raise HitPawConfigurationError("chunk_size", f"must be at least 1, got {chunk_size}")
    if policy != "overwrite" and _exists(target):
        if policy == "skip":
            log.info("%s exists; kept as it is (overwrite='skip')", storage_uri(target))
            return target
        raise _exists_error(target)
    retry = retry_policy or _api.RetryPolicy()
    if (target.protocol or "") in _LOCAL_PROTOCOLS:
        target.parent.mkdir(parents=True, exist_ok=True)
    own_session = session is None
    if session is None:
        import requests

        session = requests.Session()
    try:
        attempt = 0
        while True:
            attempt += 1
            partial = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
            try:
                size = _download(url, partial, session, chunk_size, timeout)
                if policy != "overwrite" and _exists(target):  # appeared while downloading
                    if policy == "skip":
                        _remove_quietly(partial)
                        return target
                    raise _exists_error(target)
                partial.rename(target)
            except BaseException as err:
                _remove_quietly(partial)
                if not isinstance(err, HitPawError) or not retry.should_retry(err, attempt):
                    raise
                delay = retry.delay(err, attempt)
                log.warning(
                    "Copying %s failed (%s); attempt %d of %d, retrying in %.1f s",
                    _api.url_without_query(url),
                    err,
                    attempt,
                    retry.max_attempts,
                    delay,
                )
                _pause(delay)
                continue
            log.info("Copied %s to %s (%d bytes)", _api.url_without_query(url), storage_uri(target), size)
            return target
    finally:
        if own_session:
            session.close()


def persist_job_results(
    status: Mapping[str, Any] | _api.TaskStatus,
    source: str,
    output_path: str | ObjectStoragePath,
    *,
    overwrite: str = "overwrite",
    conn_id: str | None = None,
    session: requests.Session | None = None,
    retry_policy: _api.RetryPolicy | None = None,
) -> dict[str, str]:
    """Copy a completed job's cut-out and mask into the directory ``output_path``.

    The files are named after ``source`` (the job's input) by :func:`result_names`. Returns
    ``{"res_path": uri, "mask_path": uri}`` (plain URI strings, for XCom).
    """
    policy = validate_overwrite(overwrite)
    values = status.to_dict() if isinstance(status, _api.TaskStatus) else dict(status)
    res_url, mask_url = values.get("res_url"), values.get("mask_url")
    job_id = str(values.get("job_id") or "")
    for name, value in (("res_url", res_url), ("mask_url", mask_url)):
        if not isinstance(value, str) or not value:
            raise HitPawResponseError(f"job {job_id or '(unknown)'} has no {name} to copy")
    directory = as_storage_path(output_path, conn_id, field="output_path")
    res_name, mask_name = result_names(source, job_id)
    own_session = session is None
    if session is None:
        import requests

        session = requests.Session()
    try:
        res_path = persist_result(
            cast("str", res_url),
            directory / res_name,
            overwrite=policy,
            session=session,
            retry_policy=retry_policy,
        )
        mask_path = persist_result(
            cast("str", mask_url),
            directory / mask_name,
            overwrite=policy,
            session=session,
            retry_policy=retry_policy,
        )
    finally:
        if own_session:
            session.close()
    return {"res_path": storage_uri(res_path), "mask_path": storage_uri(mask_path)}


def _exists_error(target: ObjectStoragePath) -> HitPawConfigurationError:
    return HitPawConfigurationError(
        "output_path",
        f"{storage_uri(target)} already exists (overwrite='fail'); remove it, or set overwrite to "
        "'overwrite' or 'skip'",
    )


def _exists(path: ObjectStoragePath) -> bool:
    return bool(path.exists())


def _remove_quietly(path: ObjectStoragePath) -> None:
    try:
        if path.exists():
            path.unlink()
    except Exception:  # the original error matters more than a leftover we could not clean
        log.warning("Could not remove the partial file %s", storage_uri(path), exc_info=True)


def _download(
    url: str, partial: ObjectStoragePath, session: requests.Session, chunk_size: int, timeout: Any
) -> int:
    """Stream ``url`` into ``partial``; return the number of bytes, or raise the error it stands for."""
    import requests

    shown = _api.url_without_query(url)
    try:
        # None removes a header a shared session may carry: result links are public, the key stays home.
        response = session.get(url, stream=True, timeout=timeout, headers={_api.API_KEY_HEADER: None})
    except requests.RequestException as err:
        raise _network_error(shown, err) from None
    with response:
        if not 200 <= response.status_code < 300:
            head = _first_bytes(response, 200)
            raise _api.error_for_code(
                None,
                response.status_code,
                f"downloading {shown} answered HTTP {response.status_code}: {_api.quote_body(head)}",
                retry_after=_api.parse_retry_after(response.headers.get("Retry-After")),
            )
        expected = _expected_length(response)
        written = 0
        head = b""
        try:
            with partial.open("wb") as out:
                for chunk in response.iter_content(chunk_size):
                    if not chunk:
                        continue
                    if len(head) < len(PNG_SIGNATURE):
                        head = (head + chunk)[: len(PNG_SIGNATURE)]
                        if len(head) == len(PNG_SIGNATURE) and head != PNG_SIGNATURE:
                            raise _not_png(shown, head, response.status_code)
                    out.write(chunk)
                    written += len(chunk)
        except requests.RequestException as err:
            raise _network_error(shown, err) from None
        if head != PNG_SIGNATURE:
            raise _not_png(shown, head, response.status_code)
        if expected is not None and written != expected:
            raise HitPawResponseError(
                f"downloading {shown} gave {written} bytes where Content-Length said {expected}",
                http_status=response.status_code,
            )
    return written


def _first_bytes(response: requests.Response, limit: int) -> bytes:
    try:
        return next(response.iter_content(limit), b"")
    except Exception:
        return b""


def _expected_length(response: requests.Response) -> int | None:
    """The length the body must have, when the server said; an encoded body's length is not the file's."""
    if response.headers.get("Content-Encoding", "identity").strip().lower() not in ("", "identity"):
        return None
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _not_png(shown: str, head: bytes, http_status: int) -> HitPawResponseError:
    return HitPawResponseError(f"{shown} is not a PNG (it starts with {head[:8]!r})", http_status=http_status)


def _network_error(shown: str, err: Exception) -> HitPawConnectionError:
    from airflow_provider_hitpaw.hooks.hitpaw import requests_failure

    # requests' messages quote the URL with its query (a signed link's credential): say only the place.
    return requests_failure(err, f"downloading {shown} failed: {type(err).__name__}")


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
    if not path.is_file():
        raise HitPawConfigurationError("source_path", f"there is no file at {uri}")
    size = int(path.stat().st_size)
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


def open_source(source: str | ObjectStoragePath, conn_id: str | None = None) -> BinaryIO:
    """The input opened for reading, to be streamed by :meth:`HitPawHook.upload` (close it after, or use
    it as a context manager). Check it with :func:`read_source` first."""
    path = as_storage_path(source, conn_id, field="source_path")
    return cast("BinaryIO", path.open("rb"))
