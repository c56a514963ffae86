"""OpenLineage facets of a segmentation: the input image in, the kept files out."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


def lineage(info: dict[str, Any]) -> Any:
    """The facets for ``{"input": location, "outputs": [location, ...]}``; None without the provider."""
    try:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage
    except ImportError:
        return None
    if not info.get("input"):
        return OperatorLineage()
    return OperatorLineage(
        inputs=[Dataset(*namespace_and_name(info["input"]))],
        outputs=[Dataset(*namespace_and_name(path)) for path in info.get("outputs", []) if path],
    )


def namespace_and_name(location: str) -> tuple[str, str]:
    """OpenLineage's naming: ``scheme://host[:port]`` as namespace and the path as name.

    Credentials in a URL (``https://alice:secret@cdn...``) and its query (a signed link's signature)
    never reach the lineage backend.
    """
    parts = urlsplit(location if "://" in location else f"file://{location}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    authority = f"{host}:{port}" if port else host
    namespace = f"{parts.scheme}://{authority}" if authority else parts.scheme
    return namespace, parts.path or "/"
