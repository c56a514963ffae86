"""What a batch has paid for, per input, across the tries of one clearing of its task: the ledger.

One entry per submission key (an input's URL, or a stored input's content), named by a digest so that the
ledger, kept in the user's storage, holds no URL, credential or signed query. No I/O happens here:
:mod:`airflow_provider_hitpaw._ledger_store` loads and saves it, the batch operator drives it, and every
report (results, log, metrics, the budget) is read from it.

The states of an entry, and what a later try does with it::

    submitted    a job exists (its cost as HitPaw named it)       wait for it again, never pay again
    lost         the answer was lost after HitPaw may have charged not sent again in this clearing
    completed    HitPaw said COMPLETED                           wait for it again (to keep its files)
    kept         its files are in the output folder               report it, keep nothing again
    failed       HitPaw said ERROR, or forgot the job              submit again (paid, and counted)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from airflow_provider_hitpaw import _api

#: The ledger's own format; a payload of another version fails the try that reads it (see load).
LEDGER_VERSION: Final = 1


class State(StrEnum):
    SUBMITTED = "submitted"
    LOST = "lost"
    COMPLETED = "completed"
    KEPT = "kept"
    FAILED = "failed"


#: The states in which an entry holds a job a later try waits for instead of paying again.
_LIVE: Final = frozenset({State.SUBMITTED, State.COMPLETED})


def digest(text: str) -> str:
    """The name of an input or a key in the ledger: its text never leaves the task."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class Entry:
    """One submission key's history in this clearing."""

    state: State
    job_id: str | None = None
    #: What HitPaw said the current job cost (None: it did not say).
    coins: int | None = None
    #: Coins of charges that are not the current job: earlier jobs that ended in ERROR or were forgotten,
    #: answers refused for their job id. Paid all the same.
    earlier_coins: int = 0
    #: Answers lost after HitPaw may have charged (each may have cost a price).
    lost: int = 0
    #: Whether the current job's end was counted in the metrics.
    counted: bool = False
    #: Digests of the inputs of this key whose files this clearing kept.
    kept: list[str] = field(default_factory=list)
    #: The digest of the input submitted for this key: where its coins are reported if the key is gone
    #: by a later try (a source edited between tries is another key).
    made_for: str | None = None

    def to_payload(self) -> list[Any]:
        return [
            str(self.state),
            self.job_id,
            self.coins,
            self.earlier_coins,
            self.lost,
            self.counted,
            self.kept,
            self.made_for,
        ]

    @classmethod
    def from_payload(cls, value: Any) -> Entry | None:
        if not isinstance(value, list) or len(value) != 8:
            return None
        state, job_id, coins, earlier, lost, counted, kept, made_for = value
        try:
            parsed = State(state)
        except ValueError:
            return None
        if not (job_id is None or isinstance(job_id, str)) or not isinstance(kept, list):
            return None
        return cls(
            parsed,
            job_id,
            _count(coins),
            _count(earlier) or 0,
            _count(lost) or 0,
            counted is True,
            [str(item) for item in kept],
            made_for if isinstance(made_for, str) else None,
        )


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class Ledger:
    """The entries of one batch's clearing, with the rules that read them.

    Changes since the last save are tracked (:meth:`take_changes`), so that a store can write them as
    they happen rather than the whole ledger each time.
    """

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._changed: set[str] = set()

    # -- what happens -----------------------------------------------------------------------------------

    def submitted(
        self, key: str, job_id: str, coins: int | None, made_for: str | None = None, lost: int = 0
    ) -> None:
        """HitPaw answered a submission for the input ``made_for`` with a job (and its price, when it
        named one); ``lost``: answers lost on the way, each sent again (each may have been charged)."""
        entry = self.entries.get(digest(key))
        if entry is not None and entry.job_id == job_id:
            return  # an answer recorded twice (the hook hands an interrupted answer on again)
        earlier = 0
        if entry is not None:
            lost += entry.lost
            earlier = entry.earlier_coins
            if entry.job_id is not None:
                earlier += entry.coins if entry.coins is not None else _api.COINS_PER_JOB
        named = digest(made_for) if made_for is not None else entry.made_for if entry is not None else None
        self._set(key, Entry(State.SUBMITTED, job_id, coins, earlier, lost, made_for=named))

    def answer_lost(self, key: str, made_for: str | None = None, charged: int | None = None) -> None:
        """A submission's answer was lost, or unusable, after HitPaw may have charged for it (``charged``:
        the price an unusable answer named, so the charge is known). It is not sent again in this
        clearing."""
        entry = self.entries.get(digest(key)) or Entry(State.LOST)
        if made_for is not None:
            entry.made_for = digest(made_for)
        if entry.job_id is not None and entry.state is State.FAILED:
            entry.earlier_coins += entry.coins if entry.coins is not None else _api.COINS_PER_JOB
            entry.job_id, entry.coins = None, None
        entry.state = State.LOST if entry.job_id is None else entry.state
        if charged is None:
            entry.lost += 1
        else:
            entry.earlier_coins += charged
        self._set(key, entry)

    def ended(self, key: str, job_id: str, *, completed: bool) -> None:
        """HitPaw said the key's job ended: COMPLETED, or ERROR."""
        entry = self.entries.get(digest(key))
        if entry is None or entry.job_id != job_id or entry.state is State.KEPT:
            return
        entry.state = State.COMPLETED if completed else State.FAILED
        self._set(key, entry)

    def forgotten(self, key: str, job_id: str) -> None:
        """HitPaw says it does not know the key's job (any more): it may be submitted again."""
        self.ended(key, job_id, completed=False)

    def kept(self, key: str, identity: str) -> None:
        """The files of one input of ``key`` were written to the output folder."""
        entry = self.entries.get(digest(key))
        if entry is None or entry.job_id is None:
            return
        name = digest(identity)
        if name not in entry.kept:
            entry.kept.append(name)
        entry.state = State.KEPT
        self._set(key, entry)

    def count(self, key: str) -> None:
        """The key's job end is counted in the metrics (once per clearing)."""
        entry = self.entries.get(digest(key))
        if entry is not None and not entry.counted:
            entry.counted = True
            self._set(key, entry)

    # -- what the rules read ------------------------------------------------------------------------------

    def entry(self, key: str) -> Entry | None:
        return self.entries.get(digest(key))

    def live_job(self, key: str) -> str | None:
        """The job a try waits for instead of paying again, when the key has one."""
        entry = self.entry(key)
        return entry.job_id if entry is not None and entry.state in _LIVE | {State.KEPT} else None

    def answer_was_lost(self, key: str) -> bool:
        """Whether the key's last submission may have been charged without a job to show for it: it is
        not sent again in this clearing (clearing the task is the deliberate way to pay again)."""
        entry = self.entry(key)
        return entry is not None and entry.state is State.LOST

    def kept_by_this_clearing(self, key: str, identity: str) -> bool:
        entry = self.entry(key)
        return entry is not None and entry.state is State.KEPT and digest(identity) in entry.kept

    def coins_paid(self, key: str, unknown_price: int | None = None) -> int | None:
        """What this clearing paid HitPaw for ``key``: its jobs' prices as HitPaw named them; without an
        ``unknown_price``, None when a job's price is unknown, and lost answers not counted (see
        :meth:`maybe_charged`)."""
        entry = self.entry(key)
        return 0 if entry is None else _paid(entry, unknown_price)

    def paid_for_gone_keys(
        self, keys: list[str], unknown_price: int | None = None
    ) -> dict[str | None, int | None]:
        """What this clearing paid for keys no input has any more (a source edited or gone between
        tries), by the digest of the input each was made for: reported with that input, if it is still
        there, so that what a run reports adds up to what it paid."""
        current = {digest(key) for key in keys}
        paid: dict[str | None, int | None] = {}
        for name, entry in self.entries.items():
            if name in current:
                continue
            coins = _paid(entry, unknown_price)
            before = paid.get(entry.made_for, 0)
            paid[entry.made_for] = None if coins is None or before is None else before + coins
        return paid

    def job_ids(self) -> dict[str, str]:
        """Every job this ledger names, with the digest of its key: a new answer naming one of them is
        not a new job."""
        return {entry.job_id: name for name, entry in self.entries.items() if entry.job_id is not None}

    def maybe_charged(self, key: str) -> int:
        """Submissions of ``key`` whose answer was lost: each may have cost a price, or nothing."""
        entry = self.entry(key)
        return entry.lost if entry is not None else 0

    def highest_price(self) -> int | None:
        """The highest price HitPaw named for a job of this ledger; None when it named none."""
        prices = [entry.coins for entry in self.entries.values() if entry.coins is not None]
        return max(prices, default=None)

    def spent(self) -> int:
        """The coins this clearing has paid or may have paid, a price unknown counted at the highest
        price HitPaw named (or the documented one): what the budget starts from."""
        price = self.highest_price() or _api.COINS_PER_JOB
        return sum(_paid(entry, price) or 0 for entry in self.entries.values())

    @property
    def paid_any(self) -> bool:
        return any(
            entry.job_id is not None or entry.lost or entry.earlier_coins for entry in self.entries.values()
        )

    # -- saving -------------------------------------------------------------------------------------------

    def take_changes(self) -> dict[str, list[Any]]:
        """The entries changed since the last call, as a payload a store appends."""
        changes = {name: self.entries[name].to_payload() for name in sorted(self._changed)}
        self._changed.clear()
        return changes

    def give_back(self, changes: dict[str, list[Any]]) -> None:
        """Changes a store failed to write: they are written with the next ones."""
        self._changed.update(changes)

    def mark_all_changed(self) -> None:
        """Everything is written with the next save (a ledger carried past a store that lacked it)."""
        self._changed.update(self.entries)

    @property
    def has_changes(self) -> bool:
        return bool(self._changed)

    def apply(self, changes: Any) -> bool:
        """Read a saved payload of changes (later ones override earlier ones). False when any entry is not
        of this version's shape (it is skipped; the store refuses such a ledger)."""
        if not isinstance(changes, dict):
            return False
        whole = True
        for name, value in changes.items():
            entry = Entry.from_payload(value)
            if entry is not None and isinstance(name, str):
                self.entries[name] = entry
            else:
                whole = False
        return whole

    def to_payload(self) -> dict[str, list[Any]]:
        return {name: entry.to_payload() for name, entry in self.entries.items()}

    def _set(self, key: str, entry: Entry) -> None:
        name = digest(key)
        self.entries[name] = entry
        self._changed.add(name)


def _paid(entry: Entry, unknown_price: int | None) -> int | None:
    """What ``entry`` cost as HitPaw stated it (None when a job's price is unknown and no
    ``unknown_price`` counts it); lost answers count only at an ``unknown_price`` (the budget's view):
    reports name them apart, as what may have been charged."""
    unpriced = 1 if entry.job_id is not None and entry.coins is None else 0
    if unpriced and unknown_price is None:
        return None
    own = (entry.coins or 0) if entry.job_id is not None else 0
    return own + entry.earlier_coins + (unpriced + entry.lost) * (unknown_price or 0)
