"""Where a task keeps its results, and what it shows of them: the copies, the extra links, the asset.

Shared by the operators and the sensor, which all end with a completed job on a worker.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_hitpaw._names import FLAT, LAYOUTS, MIRROR, ResultLayout
from airflow_provider_hitpaw.exceptions import HitPawConfigurationError, HitPawError
from airflow_provider_hitpaw.validation import validate_overwrite

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_hitpaw._finish import Finish
    from airflow_provider_hitpaw._kept import KeptResult
    from airflow_provider_hitpaw._ledger_store import LedgerStore
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultOutput:
    """The ``output_path``, ``output_conn_id``, ``overwrite`` and names of a task's results, checked."""

    path: Any
    conn_id: str | None
    overwrite: str
    layout: ResultLayout = field(default_factory=ResultLayout)
    #: What is made from each kept cut-out on the worker (see :mod:`._finish`).
    finishes: tuple[Finish, ...] = ()

    @classmethod
    def checked(
        cls,
        path: Any,
        conn_id: str | None,
        overwrite: str,
        *,
        waits: bool,
        output_layout: str = FLAT,
        input_root: Any = None,
        root_needed: bool = False,
        finish: Any = None,
        has_original: bool = True,
    ) -> ResultOutput:
        """Checks that need no storage and no template rendering, so they can run when the DAG is parsed.

        ``root_needed``: a task of one input has no common folder to mirror below, so it must name one.
        ``finish`` (templated) is judged here unless it still holds a template; ``has_original``: whether
        the task can read the photo it sent (a stored source), which a blurred background needs.
        """
        validate_overwrite(overwrite)
        if output_layout not in LAYOUTS:
            raise HitPawConfigurationError("output_layout", f"must be one of {', '.join(LAYOUTS)}")
        if output_layout == MIRROR and path is None:
            raise HitPawConfigurationError("output_layout", "'mirror' needs an output_path to mirror into")
        if output_layout == MIRROR and root_needed and input_root is None:
            raise HitPawConfigurationError(
                "input_root", "output_layout='mirror' needs the folder below which the input's path is kept"
            )
        if input_root is not None and output_layout != MIRROR:
            raise HitPawConfigurationError("input_root", "is only used with output_layout='mirror'")
        if isinstance(input_root, str) and not input_root.strip():
            raise HitPawConfigurationError("input_root", "is empty")
        if path is not None and not waits:
            raise HitPawConfigurationError(
                "output_path", "results can only be kept when the task waits for them"
            )
        if path is not None and not isinstance(path, str | os.PathLike) and not hasattr(path, "protocol"):
            raise HitPawConfigurationError(
                "output_path", f"must be a path, a URI or an ObjectStoragePath, got {type(path).__name__}"
            )
        if isinstance(path, str) and not path.strip():
            raise HitPawConfigurationError("output_path", "is empty")
        finishes = _checked_finishes(finish, has_original)
        if (finishes or (finish is not None and "{{" in repr(finish))) and path is None:
            raise HitPawConfigurationError(
                "finish", "finishes are written beside the kept cut-out: give output_path"
            )
        return cls(path=path, conn_id=conn_id, overwrite=overwrite, finishes=finishes)

    def laid_out(
        self, output_layout: str, input_root: Any, root_conn_id: str | None, inputs: list[str]
    ) -> ResultOutput:
        """The same output with its names resolved (after rendering): flat, or mirroring ``inputs`` below
        ``input_root`` (by default their deepest common folder)."""
        if output_layout != MIRROR:
            return self
        from airflow_provider_hitpaw import _names, storage

        if input_root is None:
            root = _names.common_root(inputs)
        else:
            root = storage.input_identity(input_root, root_conn_id)
        return replace(self, layout=ResultLayout.mirror(root))

    def check_storage(self) -> None:
        """Resolve the (rendered) path before anything is paid for: an unknown scheme, a relative path or
        a missing filesystem then fails the task up front, not after the job was paid for; so does a
        finish without Pillow to make it."""
        if self.finishes and not has_pillow():
            raise HitPawConfigurationError(
                "finish", "making finishes needs Pillow: pip install 'airflow-provider-hitpaw[finish]'"
            )
        if self.path is not None:
            from airflow_provider_hitpaw import storage

            storage.check_writable_folder(
                storage.as_storage_path(self.path, self.conn_id, field="output_path")
            )

    def kept_path(self, uri: str) -> Any:
        """A kept file's path from its URI, through the output folder's own connection (which a URI
        without it, as results carry them, would lose: ``s3://conn@bucket/`` names it in the path)."""
        from airflow_provider_hitpaw import storage

        folder = storage.as_storage_path(self.path, self.conn_id, field="output_path")
        base = storage.storage_uri(folder).rstrip("/") + "/"
        if uri.startswith(base):
            return folder / uri[len(base) :]
        return storage.as_storage_path(uri, self.conn_id)

    def check_not_over_inputs(self, identities: list[str]) -> None:
        """Refuse, before paying, results that would be written over an input (``output_path`` is the
        inputs' own folder: a PNG photo's cut-out, or a finish named like another photo)."""
        if self.path is None or not identities:
            return
        from airflow_provider_hitpaw import _finish, _kept, storage

        inputs = {identity.casefold() for identity in identities}
        directory = storage.as_storage_path(self.path, self.conn_id, field="output_path")
        base = storage.storage_uri(directory).rstrip("/") + "/"
        for identity in identities:
            cutout, mask = storage.result_names(identity, self.layout)
            made = [cutout, mask, *(_finish.finish_name(cutout, finish) for finish in self.finishes)]
            for name in [
                *made,
                cutout.rpartition("/")[0] + "/" + _kept.record_name(cutout.rpartition("/")[2]),
            ]:
                if (base + name.lstrip("/")).casefold() in inputs:
                    raise HitPawConfigurationError(
                        "output_path",
                        f"{base + name.lstrip('/')} is an input: its results would be written over it",
                    )

    def ledger_store(self, context: Context, logger: Any) -> LedgerStore:
        """Where a task's ledger lives: beside the results where there are any (every Airflow line), else
        in Airflow's task state store (3.3), else nowhere."""
        from airflow_provider_hitpaw._ledger_store import LedgerStore

        folder = None
        if self.path is not None:
            from airflow_provider_hitpaw import storage

            folder = storage.as_storage_path(self.path, self.conn_id, field="output_path")
        return LedgerStore.for_task(context, folder, logger)

    def asset(self) -> Any:
        """The Asset (Dataset on Airflow 2) of the output folder, for ``outlets``."""
        from airflow.providers.common.compat.sdk import Asset

        if self.path is None or "{{" in str(self.path):
            raise HitPawConfigurationError("emit_asset", "needs a fixed output_path (not a template)")
        from airflow_provider_hitpaw import storage

        # The same URI the copies are written under, so that a DAG scheduled on it sees them.
        return Asset(uri=storage.storage_uri(storage.as_storage_path(self.path, self.conn_id)))

    @property
    def reuses(self) -> bool:
        """Whether inputs whose results are kept here already are reused instead of submitted again."""
        return self.path is not None and self.overwrite == "skip"

    def find_kept(
        self,
        identity: str,
        fingerprint: str | None,
        listing: dict[str, int] | None = None,
        *,
        any_policy: bool = False,
    ) -> KeptResult | None:
        """The pair kept for this very input, when reusing is on (or ``any_policy``: a retry finding
        what its own earlier try kept) and its record proves it.

        ``listing`` is :meth:`list_kept`'s one listing of the folder, for many inputs at once.
        """
        if self.path is None or not (self.reuses or any_policy):
            return None
        from airflow_provider_hitpaw import _kept, storage

        directory = storage.as_storage_path(self.path, self.conn_id, field="output_path")
        folder, names = storage.result_folder(directory, identity, self.layout)
        if listing is not None:
            relative = storage.result_names(identity, self.layout)
            below = relative[0][: len(relative[0]) - len(names[0])]
            wanted = (*names, _kept.record_name(names[0]))
            listing = {name: listing[below + name] for name in wanted if below + name in listing}
        return _kept.find_kept(folder, identity, fingerprint, names, listing)

    def list_kept(self, identities: list[str]) -> dict[str, int] | None:
        """One listing of the output folder for these inputs' files (None: look each up alone)."""
        if self.path is None:
            return None
        from airflow_provider_hitpaw import _kept, storage

        directory = storage.as_storage_path(self.path, self.conn_id, field="output_path")
        wanted: set[str] = set()
        for identity in identities:
            cutout, mask = storage.result_names(identity, self.layout)
            wanted.update((cutout, mask, _kept.record_name(cutout), *self._finish_files(cutout)))
        return _kept.list_folder(directory, wanted)

    def _finish_files(self, cutout: str) -> list[str]:
        if not self.finishes:
            return []
        from airflow_provider_hitpaw._finish import finish_name

        return [finish_name(cutout, finish) for finish in self.finishes]

    def existing(self, identities: list[str]) -> dict[str, str]:
        """The inputs whose cut-out, mask or a finish is in the output folder already, each with the file's
        URI: what ``overwrite="fail"`` refuses before paying."""
        if self.path is None or not identities:
            return {}
        from airflow_provider_hitpaw import storage

        directory = storage.as_storage_path(self.path, self.conn_id, field="output_path")
        listing = self.list_kept(identities)
        found: dict[str, str] = {}
        for identity in identities:
            cutout, mask = storage.result_names(identity, self.layout)
            for name in (cutout, mask, *self._finish_files(cutout)):
                target = directory / name
                if (name in listing) if listing is not None else target.exists():
                    found[identity] = storage.storage_uri(target)
                    break
        return found

    def persist(
        self,
        context: Context,
        result: dict[str, Any],
        source: str,
        hook: HitPawHook,
        fingerprint: str | None = None,
    ) -> dict[str, Any]:
        """Copy the results when asked to, push the links' XCom, return the result with the paths."""
        from airflow_provider_hitpaw.links import links_value

        persisted: dict[str, str] | None = None
        folder = None
        if self.path is not None:
            from airflow_provider_hitpaw import storage

            folder = storage.as_storage_path(self.path, self.conn_id, field="output_path")
            persisted = storage.persist_job_results(
                result,
                source,
                folder,
                hook=hook,
                overwrite=self.overwrite,
                conn_id=self.conn_id,
                fingerprint=fingerprint,
                layout=self.layout,
            )
            result = {**result, **persisted}
        push_links(context, links_value(result, persisted, folder))
        return result


def fingerprint_of(source_path: Any, conn_id: str | None) -> str | None:
    """What a stored input is, for the record beside its results (None for a URL input)."""
    if source_path is None:
        return None
    from airflow_provider_hitpaw import _kept, storage

    path = storage.as_storage_path(source_path, conn_id, field="source_path")
    try:
        return _kept.source_fingerprint(path)
    except OSError as err:
        shown = storage.storage_uri(path)
        raise HitPawConfigurationError("source_path", f"{shown} cannot be read: {err}") from None


def push_links(context: Context, value: dict[str, str]) -> None:
    """What the extra links read; pushed empty before a deferral too, so that the links (resolved when
    the deferring try ends) find a value instead of logging a missing XCom."""
    from airflow_provider_hitpaw.links import LINKS_XCOM_KEY

    ti = context.get("ti")
    if ti is not None and hasattr(ti, "xcom_push"):
        ti.xcom_push(key=LINKS_XCOM_KEY, value=value)


def result_links() -> tuple[Any, ...]:
    """The extra links of the tasks that end with a cut-out: to it and to its mask."""
    from airflow_provider_hitpaw.links import HitPawCutoutLink, HitPawMaskLink

    return (HitPawCutoutLink(), HitPawMaskLink())


def folder_links() -> tuple[Any, ...]:
    """The extra links of a batch: the folder its results were kept in, and its contact sheet."""
    from airflow_provider_hitpaw.links import HitPawContactSheetLink, HitPawOutputFolderLink

    return (HitPawOutputFolderLink(), HitPawContactSheetLink())


def _checked_finishes(value: Any, has_original: bool) -> tuple[Finish, ...]:
    """The finishes asked for, or () while they still hold a template (judged again once rendered). A
    whole-field template renders to the text of a dict (unless the DAG renders native objects)."""
    if value is None or "{{" in repr(value):
        return ()
    if isinstance(value, str):
        import ast
        import json

        try:
            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                raise HitPawConfigurationError(
                    "finish", "is text that is no dict or list of finishes"
                ) from None
    from airflow_provider_hitpaw._finish import BLUR, parse_finishes

    finishes = parse_finishes(value)
    blurred = [finish.name for finish in finishes if finish.background == BLUR]
    if blurred and not has_original:
        raise HitPawConfigurationError(
            "finish", f"{blurred[0]!r}: a blurred background needs the original photo: give source_path(s)"
        )
    return finishes


def made_from_kept(
    output: ResultOutput,
    result: dict[str, Any],
    original: Callable[[], bytes | None] | None = None,
) -> dict[str, Any]:
    """What the worker makes from a kept pair: its finishes (made again only when their options changed)
    and its mask's figures with a ``suspect`` reason, both noted in the pair's record; {} without Pillow
    (finishes then refused before paying, by :meth:`ResultOutput.check_tools`)."""
    cutout_uri, mask_uri = result.get("res_path"), result.get("mask_path")
    if output.path is None or not isinstance(cutout_uri, str) or not isinstance(mask_uri, str):
        return {}
    if not has_pillow():
        return {}
    from airflow_provider_hitpaw import _finish, _kept, _quality, storage

    cutout, mask = output.kept_path(cutout_uri), output.kept_path(mask_uri)
    folder, cutout_name = cutout.parent, str(cutout.name)
    record = _kept.read_record(folder, cutout_name) or {}
    made = dict(record.get("finishes") or {}) if isinstance(record.get("finishes"), dict) else {}
    pair: list[bytes] = []

    def read_pair() -> list[bytes]:
        if not pair:
            pair.extend(_read_capped(path) for path in (cutout, mask))
        return pair

    files: dict[str, str] = {}
    todo = []
    for finish in output.finishes:
        target = folder / _finish.finish_name(cutout_name, finish)
        files[finish.name] = storage.storage_uri(target)
        if made.get(finish.name) != finish.digest() or not storage.exists(target):
            todo.append(finish)
    if todo:
        photo = (
            original() if original is not None and any(f.background == _finish.BLUR for f in todo) else None
        )
        cutout_bytes, mask_bytes = read_pair()
        with _RENDERING:  # a few images' pixels in memory at a time, however many keep in parallel
            rendered = _finish.apply_finishes(todo, cutout_bytes, mask_bytes, photo)
        for finish in todo:
            storage.write_replacing(folder / _finish.finish_name(cutout_name, finish), rendered[finish.name])
            made[finish.name] = finish.digest()
    quality = record.get("quality")
    if not isinstance(quality, dict) or quality.get("version") != _quality.FIGURES_VERSION:
        try:
            figures = _quality.measure_mask(read_pair()[1])
        except (HitPawError, OSError, ValueError) as err:  # a paid, kept pair is not failed for a look
            log.warning("The mask of %s could not be measured (%s); not judged", cutout_uri, err)
            return {"finishes": files} if files else {}
        quality = {**_quality.figures_as_dict(figures), "version": _quality.FIGURES_VERSION}
    if record and (todo or quality is not record.get("quality")):
        _kept.note_in_record(folder, record, finishes=made, quality=quality)
    figures_dict = {k: v for k, v in quality.items() if k != "version"}
    found: dict[str, Any] = {"quality": figures_dict, "suspect": _quality.suspect_reason_of(figures_dict)}
    if files:
        found["finishes"] = files
    return found


def has_pillow() -> bool:
    try:
        import PIL  # noqa: F401  (the [finish] extra)
    except ImportError:
        return False
    return True


#: Finishes made at once in one worker process (each may hold a few hundred MB of pixels).
_RENDERING = threading.BoundedSemaphore(2)
#: A kept cut-out is read back for finishing whole; anything larger than this was not HitPaw's.
_MAX_KEPT_BYTES = 256 * 1024 * 1024


def _read_capped(path: Any) -> bytes:
    with path.open("rb") as stream:
        data: bytes = stream.read(_MAX_KEPT_BYTES + 1)
    if len(data) > _MAX_KEPT_BYTES:
        raise HitPawConfigurationError("output_path", f"{path} is larger than a cut-out can be")
    return data
