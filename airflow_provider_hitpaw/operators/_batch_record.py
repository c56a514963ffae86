"""What a batch has paid for, kept where a later try of the task finds it.

Each job id (and what HitPaw said it cost) is recorded as its submission is answered, aligned with the
batch's unique inputs and stored in chunks (one value stays well under Airflow's 64 KB advice); a digest
of the inputs guards against reading the record of a different input list. Writes are batched: at most
one every :attr:`BatchRecord.FLUSH_SECONDS` while submitting (also while no answer arrives: the submitting
loop calls :meth:`BatchRecord.flush_if_due` on a timer), at once when the task is being stopped, and one at
the end on every path, so a crash loses at most those last seconds of records.

A store that fails to write (Airflow's API server refusing, say) does not stop a batch that has paid: the
jobs go on being waited for, the writes are tried again at the next flush, and until one succeeds the
record counts as not durable, so that a failure meanwhile is final, as on an Airflow without a store,
instead of a retry that would pay again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final, Protocol

from airflow_provider_hitpaw import _api, _state_store
from airflow_provider_hitpaw._state_store import first_try_of_clearing

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

_CHUNK: Final = 500
_KEY: Final = "hitpaw_batch"

log = logging.getLogger(__name__)


class _Warns(Protocol):
    """The part of a logger the record uses (the task's own logger, a stdlib or a structlog one)."""

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


__all__ = ["BatchRecord", "first_try_of_clearing"]


class BatchRecord:
    """The jobs of one batch, in the task state store (Airflow 3.3) where Airflow keeps one."""

    FLUSH_SECONDS = 2.0

    def __init__(self, context: Context, unique: list[str], logger: _Warns | None = None) -> None:
        self._context = context
        self._log: _Warns = logger or log
        #: Whether the last write to the store failed: what it holds may then lack paid jobs.
        self._store_failed = False
        self._failed_writes = 0
        #: Whether the store is known to lack jobs this record cannot write again (see mark_incomplete).
        self._incomplete = False
        self._digest = hashlib.sha256("\n".join(unique).encode()).hexdigest()[:16]
        self._ids: list[str | None] = [None] * len(unique)
        self._costs: list[int | None] = [None] * len(unique)
        #: Whether a try counted the job's end in the metrics (so that a retry does not count it again).
        self._counted: list[bool] = [False] * len(unique)
        #: Coins of jobs recorded and later replaced (ended in ERROR, forgotten by HitPaw): paid all the same.
        self._replaced_coins = 0
        self._dirty: set[int] = set()
        self._last_flush = time.monotonic()
        self.submitted_any = False

    @property
    def durable(self) -> bool:
        """Whether a later try of this task will find what is recorded here."""
        return not (self._store_failed or self._incomplete) and _state_store.can_remember(self._context)

    @property
    def write_failed(self) -> bool:
        """Whether the last write to the store failed (it is tried again, less and less often)."""
        return self._store_failed

    def mark_incomplete(self) -> None:
        """What an earlier part of this try paid for may be missing from the store (a write failed)."""
        self._incomplete = True

    def job_ids(self) -> list[str | None]:
        """The job of each unique input that an earlier try recorded (None where it recorded none)."""
        head = _state_store.recall(self._context, _KEY)
        if not isinstance(head, dict) or head.get("digest") != self._digest:
            return list(self._ids)
        replaced = head.get("replaced_coins")
        if isinstance(replaced, int) and not isinstance(replaced, bool) and replaced > self._replaced_coins:
            self._replaced_coins = replaced
        for chunk in range(int(head.get("chunks", 0))):
            values = _state_store.recall(self._context, f"{_KEY}_{chunk}") or []
            for offset, entry in enumerate(values):
                index = chunk * _CHUNK + offset
                job_id, cost, counted = _entry(entry)
                if index < len(self._ids) and job_id is not None:
                    self._ids[index], self._costs[index] = job_id, cost
                    self._counted[index] = counted
        return list(self._ids)

    def known_job_ids(self) -> list[str | None]:
        """The jobs this record holds now (read before, or set by this try), without asking the store."""
        return list(self._ids)

    def cost(self, index: int) -> int | None:
        return self._costs[index]

    def highest_cost(self) -> int | None:
        """The highest price HitPaw named for a recorded job; None when it named none."""
        return max(
            (
                cost
                for job_id, cost in zip(self._ids, self._costs, strict=True)
                if job_id and cost is not None
            ),
            default=None,
        )

    def spent(self, unknown_cost: int) -> int:
        """The coins this clearing of the task has paid so far: every recorded job, also those a later try
        replaced, as HitPaw stated them; a job whose cost HitPaw did not state counts ``unknown_cost``."""
        return self._replaced_coins + sum(
            unknown_cost if cost is None else cost
            for job_id, cost in zip(self._ids, self._costs, strict=True)
            if job_id
        )

    def counted(self, index: int) -> bool:
        """Whether a try (this one or an earlier) counted this job's end in the metrics."""
        return self._counted[index]

    def mark_counted(self, index: int) -> None:
        self._counted[index] = True
        if self._ids[index]:
            self._dirty.add(index // _CHUNK)

    def set(self, index: int, job_id: str, coins: int | None) -> None:
        self.submitted_any = True
        if self._ids[index] and self._ids[index] != job_id:
            replaced = self._costs[index]
            self._replaced_coins += replaced if replaced is not None else _api.COINS_PER_JOB
        self._ids[index], self._costs[index], self._counted[index] = job_id, coins, False
        self._dirty.add(index // _CHUNK)
        self.flush_if_due()

    def flush_if_due(self) -> None:
        """Write what changed once :attr:`FLUSH_SECONDS` have passed since the last write; after failed
        writes, once twice as long has passed as before (each failed write may have cost the store
        client's own retries), up to a minute."""
        wait = min(60.0, self.FLUSH_SECONDS * 2**self._failed_writes)
        if self._dirty and time.monotonic() - self._last_flush >= wait:
            self.flush()

    def _entry_of(self, index: int) -> list[Any] | None:
        job_id = self._ids[index]
        if not job_id:
            return None
        return [job_id, self._costs[index], 1] if self._counted[index] else [job_id, self._costs[index]]

    def flush(self) -> None:
        if not self._dirty:
            return
        chunks = (len(self._ids) + _CHUNK - 1) // _CHUNK
        try:
            for chunk in sorted(self._dirty):
                span = range(chunk * _CHUNK, min((chunk + 1) * _CHUNK, len(self._ids)))
                values = [self._entry_of(i) for i in span]
                if not _state_store.remember(self._context, f"{_KEY}_{chunk}", values):
                    self._dirty.clear()
                    return  # no store on this Airflow
            head = {"digest": self._digest, "chunks": chunks, "replaced_coins": self._replaced_coins}
            _state_store.remember(self._context, _KEY, head)
        except Exception as err:  # the store is Airflow's: its failure must not cost the jobs paid for
            if not self._store_failed:
                self._log.warning(
                    "Airflow's task state store could not record this batch's jobs (%s: %s): the batch "
                    "goes on and tries again; until a write succeeds, a failure of this try is final (a "
                    "retry could not find every job paid for, and would pay again)",
                    type(err).__name__,
                    _api.server_text(str(err)),
                )
            self._store_failed = True
            self._failed_writes += 1
            self._last_flush = time.monotonic()  # the next try at the next due flush, not at once
            return
        if self._store_failed:
            self._log.warning("Airflow's task state store records this batch's jobs again")
        self._store_failed = False
        self._failed_writes = 0
        self._dirty.clear()
        self._last_flush = time.monotonic()


def _entry(entry: Any) -> tuple[str | None, int | None, bool]:
    """A recorded entry: ``[job_id, coins]`` or ``[job_id, coins, 1]`` once its end was counted, or a
    bare job id (records of earlier versions)."""
    if isinstance(entry, str):
        return entry, None, False
    if isinstance(entry, list) and len(entry) in (2, 3) and isinstance(entry[0], str):
        cost = entry[1] if isinstance(entry[1], int) and not isinstance(entry[1], bool) else None
        return entry[0], cost, len(entry) == 3 and entry[2] == 1
    return None, None, False
