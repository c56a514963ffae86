"""Extra links on a segmentation task: buttons in the Airflow UI that open the cut-out and the mask (the
kept copies where a browser can open them), or a batch's results folder.

The operator pushes ``{"cutout": url, "mask": url}`` (a batch ``{"folder": url}``) to XCom under
:data:`LINKS_XCOM_KEY` (built by :func:`links_value`, :func:`folder_address`), early in the task so that
a task that fails or only submits leaves a value too; the links read it back.
``XCom.get_value(ti_key=..., key=...)`` is the one call that means the same on Airflow 2.11 (the webserver
reads the metadata database) and 3.x (the task runner resolves the link when the task finishes and stores
it for the UI).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote, urlsplit

from airflow.providers.common.compat.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath, TaskInstanceKey

LINKS_XCOM_KEY: Final = "hitpaw_links"


def _http_url(value: Any) -> str:
    """``value`` when it is an http(s) URL, else "": a link must never become ``javascript:`` or a path."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return ""
    return value if parts.scheme in ("http", "https") and parts.netloc else ""


def links_value(
    status: Mapping[str, Any],
    persisted: Mapping[str, Any] | None = None,
    folder: ObjectStoragePath | None = None,
) -> dict[str, str]:
    """What the operator pushes under :data:`LINKS_XCOM_KEY`.

    Each link opens the kept copy where a browser can open it: a copy with a public http(s) URL itself,
    a copy in S3, Google Cloud Storage or Azure Blob behind the cloud's own endpoint in that cloud's
    console (Azure: the blob's address); else HitPaw's own result (``res_url``/``mask_url``, gone after
    8 days); "" when there is neither. A copy behind another endpoint (an emulator, MinIO, a gateway)
    gets no console link: the console would show another account's bucket, or nothing.

    :param status: the job's status (``res_url``, ``mask_url``).
    :param persisted: what :func:`~airflow_provider_hitpaw.storage.persist_job_results` returned
        (``res_path``, ``mask_path``), if the results were copied.
    :param folder: the output folder the copies are in, with its connection: its filesystem says which
        endpoint the copies are behind.
    """
    persisted = persisted or {}
    fs = _filesystem(folder) if folder is not None else None
    links = {}
    for entry, kept_key, hitpaw_key in (("cutout", "res_path", "res_url"), ("mask", "mask_path", "mask_url")):
        kept = persisted.get(kept_key)
        address = storage_address(kept, fs) if isinstance(kept, str) else ""
        links[entry] = address or _http_url(status.get(hitpaw_key))
    return links


class _HitPawResultLink(BaseOperatorLink):
    """A link to one of a job's result files, read from the task's XCom."""

    #: Which entry of the pushed value this link opens.
    entry: str = ""

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.providers.common.compat.sdk import XCom

        value = XCom.get_value(ti_key=ti_key, key=LINKS_XCOM_KEY)
        if not isinstance(value, Mapping):
            return ""
        return _http_url(value.get(self.entry))


class HitPawCutoutLink(_HitPawResultLink):
    """Opens the cut-out (the subject on a transparent background)."""

    name = "HitPaw cut-out"
    entry = "cutout"


class HitPawMaskLink(_HitPawResultLink):
    """Opens the mask."""

    name = "HitPaw mask"
    entry = "mask"


def browsable_folder(uri: str, fs: Any = None) -> str:
    """An address a browser can open for a storage folder URI, or "" when there is none.

    ``https://`` folders are themselves. ``s3://``, ``gs://`` and Azure Blob (``abfs://``) folders open
    in their cloud's console (Azure: the container's listing) when ``fs``, the filesystem that reaches
    them, talks to that cloud's own endpoint; behind any other endpoint (an emulator, MinIO, a private
    gateway), or without ``fs``, there is no address to give, rather than a wrong one. A local
    ``file://`` folder has no address a browser elsewhere could open.
    """
    return storage_address(uri, fs, folder=True)


def folder_address(path: ObjectStoragePath) -> str:
    """:func:`browsable_folder` for an output folder, judged by the filesystem of its own connection."""
    from airflow_provider_hitpaw import storage

    return browsable_folder(storage.storage_uri(path), _filesystem(path))


def storage_address(uri: str, fs: Any, *, folder: bool = False) -> str:
    """The address a browser opens for a kept file (or ``folder``) at ``uri``, or "" (see
    :func:`links_value`)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return ""
    if parts.scheme in ("http", "https") and parts.netloc:
        return uri
    bucket, key = parts.netloc, unquote(parts.path).strip("/")
    if not bucket or "@" in bucket:
        return ""
    cloud = public_cloud(fs)
    if parts.scheme in ("s3", "s3a", "s3n") and cloud == "aws":
        if folder:
            return f"https://s3.console.aws.amazon.com/s3/buckets/{bucket}?prefix={quote(key)}/"
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={quote(key)}"
    if parts.scheme in ("gs", "gcs") and cloud == "gcp":
        if folder:
            return f"https://console.cloud.google.com/storage/browser/{bucket}/{quote(key)}"
        return f"https://console.cloud.google.com/storage/browser/_details/{bucket}/{quote(key)}"
    if parts.scheme in ("abfs", "abfss", "az") and cloud == "azure":
        service = str(getattr(getattr(fs, "service_client", None), "url", "")).split("?", 1)[0].rstrip("/")
        if folder:
            return f"{service}/{bucket}?restype=container&comp=list&prefix={quote(key)}/"
        return f"{service}/{bucket}/{quote(key)}"
    return ""


#: The hosts of each public cloud's storage endpoints (a suffix matches the host or a subdomain).
_CLOUD_HOSTS: Final = {
    "aws": ("amazonaws.com",),
    "gcp": ("googleapis.com",),
    "azure": ("blob.core.windows.net", "dfs.core.windows.net"),
}


def public_cloud(fs: Any) -> str | None:
    """``"aws"``, ``"gcp"`` or ``"azure"`` when ``fs`` (an s3fs, gcsfs or adlfs filesystem) talks to that
    cloud's own endpoint over https; None for any other endpoint, or another filesystem."""
    package = type(fs).__module__.split(".", 1)[0] if fs is not None else ""
    if package == "s3fs":
        endpoint = (
            getattr(fs, "endpoint_url", None)
            or (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        return "aws" if not endpoint or _on_hosts(str(endpoint), _CLOUD_HOSTS["aws"]) else None
    if package == "gcsfs":
        return "gcp" if _on_hosts(str(getattr(fs, "_location", "")), _CLOUD_HOSTS["gcp"]) else None
    if package == "adlfs":
        url = str(getattr(getattr(fs, "service_client", None), "url", ""))
        return "azure" if _on_hosts(url, _CLOUD_HOSTS["azure"]) else None
    return None


def _on_hosts(url: str, suffixes: tuple[str, ...]) -> bool:
    """Whether ``url`` is plainly https on one of the cloud's hosts: anything that clients may read as
    another host (user info, a backslash) is no cloud of ours."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return False
    if "@" in parts.netloc or "\\" in url:
        return False
    return parts.scheme == "https" and any(host == s or host.endswith("." + s) for s in suffixes)


def _filesystem(path: ObjectStoragePath) -> Any:
    """The filesystem of ``path``'s connection, or None when it cannot be had (then: no console link)."""
    try:
        return path.fs
    except Exception:  # a link is never worth failing a task for
        return None


class HitPawOutputFolderLink(_HitPawResultLink):
    """Opens the folder a batch kept its cut-outs and masks in (when it has a browsable address)."""

    name = "HitPaw results folder"
    entry = "folder"


class HitPawContactSheetLink(_HitPawResultLink):
    """Opens the first page of a batch's contact sheet (when it has a browsable address)."""

    name = "HitPaw contact sheet"
    entry = "contact_sheet"
