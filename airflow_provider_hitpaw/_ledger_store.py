"""Where a batch's ledger outlives a try: in its output folder (any Airflow line), else in Airflow 3.3's
task state store, else nowhere (then a failure after paying is final: a retry could not find the jobs).

The ledger is saved as a series of small appended pieces, the changes since the last save, so that a
save costs one small write however large the batch; loading reads them in order and then rewrites them
as one. Saves happen at most every :attr:`LedgerStore.FLUSH_SECONDS` while submitting, at once when
the task is being stopped, and at every end: a crash loses at most the last seconds of answers.

A ledger stays after its task ended well (a few hundred bytes per input): a worker lost between the
task's end and Airflow hearing of it leaves a retry that must still find what was paid and kept.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

from airflow_provider_hitpaw import _api, _state_store
from airflow_provider_hitpaw._ledger import LEDGER_VERSION, Ledger, digest
from airflow_provider_hitpaw.exceptions import HitPawStorageError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context, ObjectStoragePath

log = logging.getLogger(__name__)

#: The folder, inside ``output_path``, that holds the ledgers of the tasks writing there.
LEDGER_FOLDER: Final = ".hitpaw-ledger"
#: Entries per piece: one piece stays well under Airflow's 64 KB advice for a stored value.
_PIECE: Final = 300
_STORE_KEY: Final = "hitpaw_ledger"


class _Warns(Protocol):
    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


class _Backend(Protocol):
    #: How a message names where the ledger is.
    where: str

    def read(self) -> list[Any]: ...

    def append(self, piece: dict[str, Any]) -> None: ...

    def replace(self, pieces: list[dict[str, Any]]) -> None: ...


class LedgerStore:
    """Loads and saves one task's ledger; knows whether what it saved will be found by a later try."""

    FLUSH_SECONDS = 2.0

    def __init__(self, backend: _Backend | None, logger: _Warns | None = None) -> None:
        self._backend = backend
        self._log: _Warns = logger or log
        self._write_failed = False
        self._failed_writes = 0
        self._last_save = time.monotonic()

    @classmethod
    def for_task(
        cls, context: Context, output_folder: ObjectStoragePath | None, logger: _Warns
    ) -> LedgerStore:
        if output_folder is not None:
            return cls(_FolderBackend(output_folder, context), logger)
        if _state_store.can_remember(context):
            return cls(_StateStoreBackend(context), logger)
        return cls(None, logger)

    @property
    def keeps(self) -> bool:
        """Whether this Airflow and task keep a ledger across tries at all."""
        return self._backend is not None

    @property
    def where(self) -> str:
        return self._backend.where if self._backend is not None else "nowhere"

    def durable(self, ledger: Ledger) -> bool:
        """Whether a later try will find everything this ledger holds."""
        return self._backend is not None and not self._write_failed and not ledger.has_changes

    def load(self) -> Ledger:
        """The ledger earlier tries of this clearing saved (empty on a first try). A ledger that cannot be
        read fails the try: without it a retry could pay again for every job."""
        ledger = Ledger()
        if self._backend is None:
            return ledger
        try:
            pieces = self._backend.read()
        except Exception as err:
            raise HitPawStorageError(
                f"the batch's ledger of what earlier tries paid for cannot be read from {self.where} "
                f"({_words(err)}); not submitting anything rather than paying twice"
            ) from None
        unreadable = foreign = 0
        for piece in pieces:
            if isinstance(piece, dict) and piece.get("version") == LEDGER_VERSION:
                foreign += not ledger.apply(piece.get("entries"))
            elif isinstance(piece, dict):
                foreign += 1
            else:
                unreadable += 1
        if foreign:
            # A whole piece this version cannot read was written by another one (a rolling upgrade, a
            # downgrade): what it holds may be paid for. Kept as it is, and nothing submitted blindly.
            raise HitPawStorageError(
                f"{foreign} piece(s) of the batch's ledger in {self.where} were written by another version "
                "of this provider; not submitting anything rather than paying twice (run the task's "
                "retry with that version, or clear the task to start a new ledger)"
            )
        if unreadable:
            self._log.warning(
                "%d piece(s) of the ledger in %s could not be read (a save cut off by a crash); what they "
                "held is taken as not paid for",
                unreadable,
                self.where,
            )
        if len(pieces) > 1:
            try:  # one piece per save adds up over long tries: read as one from now on
                self._backend.replace(_pieces(ledger.to_payload()))
            except Exception as err:  # the pieces are still there: only the next load is slower
                self._log.warning("The ledger in %s could not be compacted (%s)", self.where, _words(err))
        return ledger

    def save_if_due(self, ledger: Ledger) -> None:
        """Save once :attr:`FLUSH_SECONDS` have passed since the last save; after failed writes, wait
        twice as long each time, up to a minute."""
        wait = min(60.0, self.FLUSH_SECONDS * 2**self._failed_writes)
        if ledger.has_changes and time.monotonic() - self._last_save >= wait:
            self.save(ledger)

    def save(self, ledger: Ledger) -> None:
        """Write the changes since the last save. A failed write does not stop a batch that has paid: it
        goes on, the changes are written with the next save, and until one succeeds the ledger counts as
        not durable (a failure meanwhile is then final rather than a retry that would pay again)."""
        changes = ledger.take_changes()
        if not changes or self._backend is None:
            return
        try:
            for piece in _pieces(changes):
                self._backend.append(piece)
        except Exception as err:
            ledger.give_back(changes)
            if not self._write_failed:
                self._log.warning(
                    "The batch's ledger could not be saved to %s (%s): the batch goes on and tries again; "
                    "until a save succeeds, a failure of this try is final (a retry could not find every "
                    "job paid for, and would pay again)",
                    self.where,
                    _words(err),
                )
            self._write_failed = True
            self._failed_writes += 1
            self._last_save = time.monotonic()
            return
        if self._write_failed:
            self._log.warning("The batch's ledger is saved to %s again", self.where)
        self._write_failed = False
        self._failed_writes = 0
        self._last_save = time.monotonic()

    @property
    def write_failed(self) -> bool:
        return self._write_failed


def _pieces(entries: dict[str, Any]) -> list[dict[str, Any]]:
    names = list(entries)
    return [
        {
            "version": LEDGER_VERSION,
            "entries": {name: entries[name] for name in names[start : start + _PIECE]},
        }
        for start in range(0, max(1, len(names)), _PIECE)
    ]


def _words(err: BaseException) -> str:
    from airflow_provider_hitpaw import storage

    return _api.server_text(storage.store_words(err))


def _clearing(context: Context) -> str:
    """Which clearing of the task a ledger belongs to: clearing raises ``max_tries``, and a cleared
    task starts over."""
    max_tries = getattr(context.get("ti"), "max_tries", None)
    return str(max_tries) if isinstance(max_tries, int) else "0"


class _FolderBackend:
    """The ledger as files ``<output>/.hitpaw-ledger/<task>/c<clearing>-t<try>-<n>.json``, where
    ``<task>`` is a digest of the DAG, task, run and map index: found by every later try on any line."""

    def __init__(self, output_folder: ObjectStoragePath, context: Context) -> None:
        ti = context.get("ti")
        names = [str(getattr(ti, name, "")) for name in ("dag_id", "task_id", "run_id", "map_index")]
        self._folder = output_folder / LEDGER_FOLDER / digest("\n".join(names))
        self._prefix = f"c{_clearing(context)}-"
        try_number = getattr(ti, "try_number", None)
        self._try = try_number if isinstance(try_number, int) else 0
        self._sequence = 0
        from airflow_provider_hitpaw import storage

        self.where = storage.storage_uri(self._folder)

    def _names(self) -> list[str]:
        fs, path = self._folder.fs, str(self._folder.path).rstrip("/")
        invalidate = getattr(fs, "invalidate_cache", None)
        if invalidate is not None:
            invalidate(path)
        try:
            found = fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        names = [str(item).rstrip("/").rsplit("/", 1)[-1] for item in found]
        mine = [name for name in names if name.startswith(self._prefix) and name.endswith(".json")]
        return sorted(mine, key=_order)

    def read(self) -> list[Any]:
        pieces: list[Any] = []
        for name in self._names():
            try:
                pieces.append(json.loads((self._folder / name).read_bytes()))
            except ValueError:  # a save cut off by a crash: as if it had not happened
                pieces.append(None)
        return pieces

    def append(self, piece: dict[str, Any]) -> None:
        from airflow_provider_hitpaw import storage

        if self._sequence == 0:
            # Another process may have saved in this try already (the deferring half of it): go on after
            # its pieces, never over them.
            saved = [_order(name) for name in self._names()]
            self._sequence = max((seq for tried, seq in saved if tried == self._try), default=0)
        if storage.is_local(self._folder):
            self._folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        name = f"{self._prefix}t{self._try}-{self._sequence}.json"
        target = self._folder / name
        target.fs.pipe_file(str(target.path), json.dumps(piece, separators=(",", ":")).encode())

    def replace(self, pieces: list[dict[str, Any]]) -> None:
        old = self._names()
        for piece in pieces:
            self.append(piece)
        for name in old:
            (self._folder / name).unlink()


def _order(name: str) -> tuple[int, int]:
    """``c3-t2-15.json`` sorts as (2, 15): by try, then by save."""
    try:
        _, tried, sequence = name.removesuffix(".json").split("-")
        return int(tried.removeprefix("t")), int(sequence)
    except ValueError:
        return (-1, -1)


class _StateStoreBackend:
    """The ledger in Airflow 3.3's task state store: a head naming the range of pieces to read."""

    where = "Airflow's task state store"

    def __init__(self, context: Context) -> None:
        self._context = context
        self._range: tuple[int, int] | None = None

    def _head(self) -> tuple[int, int]:
        if self._range is None:
            head = _state_store.recall(self._context, _STORE_KEY)
            first = head.get("first") if isinstance(head, dict) else None
            end = head.get("end") if isinstance(head, dict) else None
            if isinstance(first, int) and isinstance(end, int) and 0 <= first <= end:
                self._range = (first, end)
            else:
                self._range = (0, 0)
        return self._range

    def _write(self, pieces: list[dict[str, Any]], first: int | None = None) -> None:
        """Write the pieces after the last one, then move the head: a crash midway leaves the old."""
        start, end = self._head()
        for offset, piece in enumerate(pieces):
            _state_store.remember(self._context, f"{_STORE_KEY}_{end + offset}", piece)
        self._range = (start if first is None else end, end + len(pieces))
        _state_store.remember(self._context, _STORE_KEY, {"first": self._range[0], "end": self._range[1]})

    def read(self) -> list[Any]:
        first, end = self._head()
        return [_state_store.recall(self._context, f"{_STORE_KEY}_{n}") for n in range(first, end)]

    def append(self, piece: dict[str, Any]) -> None:
        self._write([piece])

    def replace(self, pieces: list[dict[str, Any]]) -> None:
        self._write(pieces, first=self._head()[1])
