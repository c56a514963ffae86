"""What an input's results are called in ``output_path``: flat hashed names, or the input's own folders.

Pure (no I/O), shared by both operators and the sensor, so that a name chosen by one task is the name
every later run looks for.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import quote, unquote, urlsplit

from airflow_provider_hitpaw._api import url_without_query
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError

if TYPE_CHECKING:
    from collections.abc import Callable

#: ``output_layout`` values: every result in ``output_path`` itself, or below the input's folders.
FLAT: Final = "flat"
MIRROR: Final = "mirror"
LAYOUTS: Final = (FLAT, MIRROR)

#: Hex digits of the input's hash in flat names: 48 bits, so that even a million inputs sharing one folder
#: have a chance of about 2e-3 in a million of two sharing a hash (and a batch checks anyway).
_HASH_DIGITS: Final = 12
#: Bytes a name's readable part keeps at most. With the hash, ``_mask.png`` and a temporary prefix, every
#: name stays well under the 255 bytes most file systems allow, whatever the script (a CJK letter is 3).
_MAX_STEM_BYTES: Final = 120
#: Folders a mirrored name keeps at most below ``output_path`` (deeper ones are refused before paying).
_MAX_DEPTH: Final = 32
#: Bytes a mirrored name may take below ``output_path``: object stores take keys of 1,024 bytes at most,
#: which leaves room for the output folder's own path and a temporary prefix.
_MAX_NAME_BYTES: Final = 700
_UNSAFE: Final = re.compile(r"[^\w.\-]+")
_MASK_SUFFIX: Final = "_mask"
_HTTP: Final = frozenset({"http", "https"})


@dataclass(frozen=True)
class ResultLayout:
    """Where results go below ``output_path``: flat (``root`` None), or mirroring each input's path below
    ``root``, an input identity (a URL, or a stored file's URI) ending in ``/``."""

    root: str | None = None

    @classmethod
    def mirror(cls, root: str) -> ResultLayout:
        return cls(root=root.rstrip("/") + "/")

    def names(self, identity: str) -> tuple[str, str]:
        """The cut-out's and the mask's names, relative to ``output_path`` (``/`` between folders)."""
        if self.root is None:
            return flat_names(identity)
        return mirrored_names(identity, self.root)

    def check_unique(
        self, identities: list[str], finish_names: Callable[[str], list[str]] | None = None
    ) -> None:
        """Refuse inputs two of which would share a result file (before anything is paid for);
        ``finish_names`` gives the files made beside a cut-out, which must not be another input's."""
        seen: dict[str, str] = {}
        folders: dict[str, str] = {}
        for identity in dict.fromkeys(identities):
            cutout, mask = self.names(identity)
            for name in (cutout, mask, *(finish_names(cutout) if finish_names else ())):
                other = seen.setdefault(name.casefold(), identity)
                if other != identity:
                    raise _clash(other, identity, name)
                parts = name.casefold().split("/")
                for depth in range(1, len(parts)):  # a file named as another input's folder, or within it
                    folders.setdefault("/".join(parts[:depth]), identity)
        for folder, owner in folders.items():
            if folder in seen:
                raise _clash(seen[folder], owner, folder + " (a file, and a folder of results)")


def _clash(one: str, other: str, name: str) -> HitPawConfigurationError:
    return HitPawConfigurationError(
        "output_path", f"{url_without_query(one)} and {url_without_query(other)} would both be kept as {name}"
    )


def flat_names(identity: str) -> tuple[str, str]:
    """``<stem>-<hash>.png`` and ``<stem>-<hash>_mask.png``: the stem from the input's last path segment
    (letters of any script, digits, ``.``, ``-``, ``_``; ``image`` when nothing usable is left), the hash
    from the whole identity, so ``a/photo.jpg`` and ``photo.jpg?v=2`` get names of their own on every run."""
    text = unicodedata.normalize("NFC", str(identity).strip())
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_DIGITS]
    stem = safe_segment(_segments(text)[-1:], strip_extension=True) or "image"
    return f"{stem}-{digest}.png", f"{stem}-{digest}{_MASK_SUFFIX}.png"


def mirrored_names(identity: str, root: str) -> tuple[str, str]:
    """``<folders below root>/<stem>.png`` and ``..._mask.png``. A stem that ends in ``_mask`` itself
    keeps a hash, so that no cut-out is ever named like another input's mask."""
    place, path = _place(identity)
    root_place, root_path = _place(root)
    if place != root_place or not path.startswith(root_path):
        raise HitPawConfigurationError(
            "input_root", f"{url_without_query(identity)} is not below {url_without_query(root)}"
        )
    below = [part for part in path[len(root_path) :].split("/") if part]
    if not below:
        raise HitPawConfigurationError("input_root", f"{url_without_query(identity)} is no file below it")
    if len(below) > _MAX_DEPTH:
        raise HitPawConfigurationError(
            "input_root", f"{url_without_query(identity)} is more than {_MAX_DEPTH} folders below it"
        )
    folders = [safe_segment([part], strip_extension=False) or "_" for part in below[:-1]]
    stem = safe_segment(below[-1:], strip_extension=True) or "image"
    if stem.casefold().endswith(_MASK_SUFFIX):
        stem = flat_names(identity)[0].removesuffix(".png")
    prefix = "/".join(folders)
    prefix = f"{prefix}/" if prefix else ""
    mask = f"{prefix}{stem}{_MASK_SUFFIX}.png"
    if len(mask.encode("utf-8")) + 48 > _MAX_NAME_BYTES:  # 48: a finish's name and a temporary prefix
        raise HitPawConfigurationError(
            "input_root",
            f"{url_without_query(identity)} is too deep or long below it to be kept as an object's name "
            f"(at most {_MAX_NAME_BYTES} bytes)",
        )
    return f"{prefix}{stem}.png", mask


def common_root(identities: list[str]) -> str:
    """The deepest folder holding every input (what ``output_layout="mirror"`` mirrors below when no
    ``input_root`` is named). Inputs in different places (hosts, buckets, schemes), or all in one
    folder, have none."""
    if not identities:
        raise HitPawConfigurationError("input_root", "there are no inputs to find a common folder of")
    places = {_place(identity)[0] for identity in identities}
    if len(places) > 1:
        raise HitPawConfigurationError(
            "input_root", "the inputs are in different places (hosts or buckets): name the root to mirror"
        )
    folders = [_place(identity)[1].rsplit("/", 1)[0].split("/") for identity in identities]
    if len({tuple(parts) for parts in folders}) < 2:
        # One folder (one input, a mapped chunk of one SKU) would be kept flat in output_path, where
        # another task's inputs of the same names land too: only a root named once keeps them apart.
        raise HitPawConfigurationError(
            "input_root",
            "the inputs are all in one folder, which mirrors to nothing: name the root to mirror",
        )
    common: list[str] = []
    for parts in zip(*folders, strict=False):
        if len(set(parts)) > 1:
            break
        common.append(parts[0])
    return _as_identity(next(iter(places)), "/".join(common) + "/")


def safe_segment(parts: list[str], *, strip_extension: bool) -> str:
    """A path segment as a file or folder name: unsafe characters as ``_``, no leading dots (so
    never ``..``, nor a hidden name), at most ``_MAX_STEM_BYTES`` bytes; empty when nothing is left."""
    if not parts:
        return ""
    name = parts[0]
    dot = name.rfind(".")
    if strip_extension and dot > 0:
        name = name[:dot]
    name = _UNSAFE.sub("_", name).lstrip(".-_").rstrip(".")
    name = name.encode("utf-8")[:_MAX_STEM_BYTES].decode("utf-8", errors="ignore").rstrip(".")
    return name if any(ch.isalnum() for ch in name) else ""


def _segments(text: str) -> list[str]:
    if "://" in text:
        text = unquote(urlsplit(text).path)
    return text.replace("\\", "/").rsplit("/", 1)[-1:]


def _place(identity: str) -> tuple[str, str]:
    """An identity's place (scheme and host or bucket, lower-cased) and its path: a URL's decoded, a
    stored file's as it is (its URI is not percent-encoded), in NFC, ``.`` and ``..`` resolved."""
    text = str(identity).strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise HitPawConfigurationError("input_root", "an input is not a URL or a URI")
    scheme = scheme.lower()
    if scheme in _HTTP:
        try:
            parts = urlsplit(text)
        except ValueError:
            raise HitPawConfigurationError("input_root", "an input is not a URL") from None
        host, path = parts.netloc.rpartition("@")[2], unquote(parts.path)
    else:
        host, slash, path = rest.partition("/")
        path = slash + path
    path = unicodedata.normalize("NFC", re.sub(r"/+", "/", "/" + path.replace("\\", "/")))
    folder = path.endswith("/")
    path = posixpath.normpath(path)
    if folder and path != "/":
        path += "/"
    return f"{scheme}|{host.lower()}", path


def _as_identity(place: str, path: str) -> str:
    scheme, _, host = place.partition("|")
    return f"{scheme}://{host}{quote(path, safe='/') if scheme in _HTTP else path}"
