"""Extra links on a segmentation task: buttons in the Airflow UI that open the cut-out and the mask.

The operator pushes ``{"cutout": url, "mask": url}`` to XCom under :data:`LINKS_XCOM_KEY` (built by
:func:`links_value`); the links read it back. ``XCom.get_value(ti_key=..., key=...)`` is the one call that
means the same on Airflow 2.11 (the webserver reads the metadata database) and 3.x (the task runner
resolves the link when the task finishes and stores it for the UI).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

from airflow.providers.common.compat.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

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


def links_value(status: Mapping[str, Any], persisted: Mapping[str, Any] | None = None) -> dict[str, str]:
    """What the operator pushes under :data:`LINKS_XCOM_KEY`.

    Each link goes to the persisted copy when that copy has a public http(s) URL, else to HitPaw's own
    result (``res_url``/``mask_url``, gone after 8 days); "" when there is neither.

    :param status: the job's status (``res_url``, ``mask_url``).
    :param persisted: what :func:`~airflow_provider_hitpaw.storage.persist_job_results` returned
        (``res_path``, ``mask_path``), if the results were copied.
    """
    persisted = persisted or {}
    return {
        "cutout": _http_url(persisted.get("res_path")) or _http_url(status.get("res_url")),
        "mask": _http_url(persisted.get("mask_path")) or _http_url(status.get("mask_url")),
    }


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


def browsable_folder(uri: str) -> str:
    """An address a browser can open for a storage folder URI, or "" when there is none.

    ``https://`` folders are themselves; ``s3://`` and ``gs://`` open in their cloud consoles; a local
    ``file://`` folder has no address a browser elsewhere could open.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return ""
    prefix = parts.path.strip("/")
    if parts.scheme in ("http", "https") and parts.netloc:
        return uri
    if parts.scheme in ("s3", "s3a") and parts.netloc:
        return f"https://s3.console.aws.amazon.com/s3/buckets/{parts.netloc}?prefix={quote(prefix)}/"
    if parts.scheme in ("gs", "gcs") and parts.netloc:
        return f"https://console.cloud.google.com/storage/browser/{parts.netloc}/{quote(prefix)}"
    return ""


class HitPawOutputFolderLink(_HitPawResultLink):
    """Opens the folder a batch kept its cut-outs and masks in (when it has a browsable address)."""

    name = "HitPaw results folder"
    entry = "folder"
