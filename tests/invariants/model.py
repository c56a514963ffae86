"""The books the invariants are judged against: what HitPaw charged (the emulator's own record, kept here
across the jobs it forgets), which try of which clearing of which DAG run made each charge, and the checks.

Nothing here drives the operator; :mod:`tests.invariants.test_batch_money` does, and calls
:meth:`Accounts.check_try` after every try. Every violation is its own exception class (a subclass of
:class:`InvariantViolation` named after the invariant and the way it broke), so that Hypothesis reports
each kind of failure with its own minimal schedule instead of the first one it met.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Protocol

#: What HitPaw charges for one job (hitpaw-api.md section 1; the emulator's ``JOB_COST``).
PRICE: Final = 20

#: Whether the clearings of one DAG run make one "run" for invariants 1, 2 and 4 where Airflow keeps a task
#: state store (which outlives clearings). False (the default) follows the README: clearing a task is a
#: deliberate new start on every line, which submits and pays again, so each clearing is a run of its own.
#: True is the stricter reading: a clear must neither pay again for a job an earlier clearing of the DAG
#: run was told of, nor leave that clearing's coins out of its report.
CLEARINGS_SHARE_A_RUN: Final = False

#: Whether an input given twice may carry its ``maybe_charged`` on both of its results (False: a lost
#: answer is reported once, on the first, as its coins are).
MAYBE_CHARGED_ON_COPIES_TOLERATED = False


# --- violations ----------------------------------------------------------------------------------------


class InvariantViolation(AssertionError):
    """An invariant of the module docstring of ``test_batch_money`` does not hold."""

    invariant: ClassVar[int] = 0


class HarnessError(AssertionError):
    """The test itself saw something it cannot judge (a job made between tries, an unknown answer)."""


class Inv1PaidAgainInARetry(InvariantViolation):
    invariant = 1


class Inv1PaidAgainAfterAClear(InvariantViolation):
    invariant = 1


class Inv1PaidTwiceInOneTry(InvariantViolation):
    invariant = 1


class Inv1PaidForNoInput(InvariantViolation):
    invariant = 1


class Inv1PaidForResultsKeptUnderSkip(InvariantViolation):
    invariant = 1


class Inv1PaidThenRefusedUnderFail(InvariantViolation):
    invariant = 1


class Inv1OverBudget(InvariantViolation):
    invariant = 1


class Inv2BooksDisagree(InvariantViolation):
    invariant = 2


class Inv2JobChargedTwiceInAReport(InvariantViolation):
    invariant = 2


class Inv2SecondJobInARetry(InvariantViolation):
    invariant = 2


class Inv2RetryPaidAgainForALostAnswer(InvariantViolation):
    invariant = 2


class Inv2RetryPaidAgainForAnUnrecordedJob(InvariantViolation):
    invariant = 2


class Inv2SecondJobAfterAClear(InvariantViolation):
    invariant = 2


class Inv2SecondJobInOneTry(InvariantViolation):
    invariant = 2


class Inv2PaidJobUnsavedWhenSubmittingEnded(InvariantViolation):
    invariant = 2


class Inv2RetryAllowedAfterAnUnsavedPayment(InvariantViolation):
    invariant = 2


class Inv3RecordNamesNoJob(InvariantViolation):
    invariant = 3


class Inv3RecordOfAnotherInput(InvariantViolation):
    invariant = 3


class Inv3RecordVouchesForOtherFiles(InvariantViolation):
    invariant = 3


class Inv3ResultNamesNoJob(InvariantViolation):
    invariant = 3


class Inv3ResultOfAnotherInput(InvariantViolation):
    invariant = 3


class Inv3ResultSaysErrorOfALiveJob(InvariantViolation):
    invariant = 3


class Inv3ResultFileIsNotTheJobs(InvariantViolation):
    invariant = 3


class Inv3CompletedResultNotKept(InvariantViolation):
    invariant = 3


class Inv4OverReported(InvariantViolation):
    invariant = 4


class Inv4PaidPairReportedAsReused(InvariantViolation):
    invariant = 4


class Inv4EarlierClearingNotReported(InvariantViolation):
    invariant = 4


class Inv4ReplacedJobNotReported(InvariantViolation):
    invariant = 4


class Inv4ChargeNotReported(InvariantViolation):
    invariant = 4


class Inv4PaidResultNamesAJobOfAnotherRun(InvariantViolation):
    invariant = 4


class Inv4LostAnswerNotReported(InvariantViolation):
    invariant = 4


class Inv4MaybeChargedOverReported(InvariantViolation):
    invariant = 4


class Inv5SecretShown(InvariantViolation):
    invariant = 5


# --- the books ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TryRef:
    """One try: its place in the whole schedule, its DAG run and clearing, Airflow's try number."""

    index: int
    run: int
    clearing: int
    try_number: int

    def __str__(self) -> str:
        return f"try #{self.index} (run {self.run}, clearing {self.clearing}, try_number {self.try_number})"


@dataclass
class Charge:
    """One job HitPaw created, and so charged :data:`PRICE` for, as its books show it."""

    job_id: str
    file_url: str
    #: What the job was made from: ``url:<the URL>``, or ``sha256:<hex>`` of an uploaded object's bytes.
    content: str
    made_in: TryRef
    submitted_at: float
    #: Whether the job's id reached the client in a submission's answer (not dropped, garbled, replaced).
    delivered: bool = False
    #: Whether the worker was killed after the answer came and before the id was in the task state store.
    lost_to_kill: bool = False
    #: Whether the id never reached the task state store because the store refused every write of the
    #: try (its API server down): no later try can know the job, and the operator must not let a retry
    #: pay for it again (README: such a failure is final).
    lost_to_store: bool = False
    #: Whether the try that made the job was killed before its ledger was saved at the end of submitting:
    #: what it knew of a lost answer, the kill may have taken before it was recorded.
    in_killed_try: bool = False
    #: Whether the task state store refused every write of the try that made the job (and no output
    #: folder kept its ledger): what that try knew of a lost answer, no later try can read.
    in_store_failed_try: bool = False
    status: str = "CONVERTING"
    ended_error_at: float | None = None
    #: The index of the first try that ran after the schedule made HitPaw forget the job.
    forgotten_before: int | None = None
    cutout: bytes | None = None
    mask: bytes | None = None

    @property
    def lost(self) -> bool:
        """Whether no later try could know this job: its answer was lost, or the kill or a failing task
        state store took its record."""
        return not self.delivered or self.lost_to_kill or self.lost_to_store

    @property
    def unknown_to_later_tries(self) -> bool:
        """Whether a later try of its clearing cannot know of this charge at all, not even as a lost
        answer its ledger notes: its record, or the note of its lost answer, went with a kill or a
        failing store."""
        if self.lost_to_kill or self.lost_to_store:
            return True
        return not self.delivered and (self.in_killed_try or self.in_store_failed_try)

    def short(self) -> str:
        return f"{self.job_id[:8]} ({self.content[:60]}, {self.made_in}, {self.status})"


class EmulatorBooks(Protocol):
    """The part of the ``hitpaw_emulator`` fixture's handle the books read."""

    @property
    def base_url(self) -> str: ...

    def state(self) -> dict[str, Any]: ...


def sha256_content(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def url_content(url: str) -> str:
    return "url:" + url


class Books:
    """HitPaw's books as seen from outside: every job ever made (also those it forgot since), with the
    result bytes of each completed one, and what each was made from."""

    def __init__(self, emulator: EmulatorBooks, initial_coins: int) -> None:
        self._emulator = emulator
        self.initial_coins = initial_coins
        self.charges: dict[str, Charge] = {}

    def _get(self, url: str) -> bytes | None:
        import requests

        answer = requests.get(url, timeout=10)
        return answer.content if answer.status_code == 200 else None

    def _content_of(self, file_url: str) -> str:
        if "/oss/objects/" in file_url:
            data = self._get(file_url)
            if data is None:
                raise HarnessError(f"the uploaded object {file_url} cannot be read back")
            return sha256_content(data)
        return url_content(file_url)

    def sync(self, made_in: TryRef | None, delivered: set[str]) -> None:
        """Read the emulator's books: new jobs (made by ``made_in``), statuses, result bytes, coins."""
        state = self._emulator.state()
        for snap in state["jobs"]:
            job_id = str(snap["job_id"])
            charge = self.charges.get(job_id)
            if charge is None:
                if made_in is None:
                    raise HarnessError(f"HitPaw made job {job_id} while no try ran")
                charge = Charge(
                    job_id=job_id,
                    file_url=str(snap["file_url"]),
                    content=self._content_of(str(snap["file_url"])),
                    made_in=made_in,
                    submitted_at=float(snap["submitted_at"]),
                )
                self.charges[job_id] = charge
            charge.status = str(snap["status"])
            if charge.status == "ERROR" and charge.ended_error_at is None:
                charge.ended_error_at = float(snap.get("finished_at") or snap["submitted_at"])
            if charge.status == "COMPLETED" and charge.cutout is None:
                base = self._emulator.base_url
                charge.cutout = self._get(f"{base}/results/{job_id}/cutout.png")
                charge.mask = self._get(f"{base}/results/{job_id}/mask.png")
        for charge in self.charges.values():
            charge.delivered = charge.delivered or charge.job_id in delivered
        taken = self.initial_coins - int(state["coins"])
        if taken != PRICE * len(self.charges):
            raise Inv2BooksDisagree(
                f"HitPaw took {taken} coins for {len(self.charges)} jobs: a job was charged twice, or coins "
                "went elsewhere"
            )

    def forget(self, job_id: str, before_try: int) -> None:
        self.charges[job_id].forgotten_before = before_try

    def of_content(self, content: str) -> list[Charge]:
        return [c for c in self.charges.values() if c.content == content]


# --- one try's facts ----------------------------------------------------------------------------------


@dataclass
class TryFacts:
    """What a try started from and what it ended with, as the checks need them."""

    ref: TryRef
    #: Each accepted input's identity and its content when the try started (None: a missing source).
    contents: dict[str, str | None]
    #: Contents the try must not pay for, and why (results already kept under skip, present under fail).
    needless: dict[str, str]
    max_coins: int | None
    #: ``success``, ``failed`` (Airflow retries it), ``failed_final`` or ``killed``.
    outcome: str
    #: The results the try returned, or pushed to XCom "results" when it failed (None: neither).
    report: list[dict[str, Any]] | None
    #: Every text the try showed: XCom values, exception texts, its logs.
    texts: list[str] = field(default_factory=list)
    #: Per content: the jobs this try made whose answer was lost on the way (no answer came back, or one
    #: the hook cannot take as proof that nothing was done): what the try knew may have been charged,
    #: noted once per content and try in its ledger.
    lost_answers: dict[str, int] = field(default_factory=dict)
    #: The jobs this try made whose answer did not bring back their own id, but one that names another
    #: job (refused, charged at its price): what its budget may overrun by.
    unanswered: int = 0
    #: Of those, the ones its ledger does not count (an answer lost twice noted once, an answer carrying
    #: HitPaw's error code taken as "nothing done"): what a retry's budget cannot know of.
    unnoted: int = 0
    #: The try's submission attempts that brought back no job of their own (lost, refused, 5xx, 429):
    #: the most that may have been charged without the client knowing the job.
    failed_attempts: int = 0
    #: Whether what the try learnt while submitting is in a ledger a later try of its clearing reads:
    #: not a kill before the save at the end of submitting, nor a task state store refusing every write.
    note_kept: bool = True
    #: Jobs the try was told of and that are in no record after a kill that came once submitting had
    #: ended (at a poll or a pair), where a ledger is kept: the save at every end of submitting missed
    #: them.
    unsaved: list[str] = field(default_factory=list)


@dataclass
class Schedule:
    """What the checks need to know of the task and of the line it runs on."""

    has_store: bool
    sources: bool
    #: Each source file's path -> every content it has had (in order), for judging records.
    source_history: dict[str, list[str]] = field(default_factory=dict)
    #: Output folder (one per example: every DAG run keeps there).
    output: Path | None = None
    #: Identity -> its file names in ``output`` (cut-out, mask, record), by the package's naming rule.
    names: dict[str, tuple[str, str, str]] = field(default_factory=dict)


class Accounts:
    """Every try of an example, and the invariants judged after each."""

    def __init__(self, books: Books, schedule: Schedule, secret: str) -> None:
        self.books = books
        self.schedule = schedule
        self.secret = secret
        self.tries: list[TryFacts] = []

    # -- scopes ---------------------------------------------------------------------------------------

    def scope(self, ref: TryRef) -> tuple[int, ...]:
        """The accounting scope of a try ("a run", module docstring): its clearing of its DAG run (with
        :data:`CLEARINGS_SHARE_A_RUN`, its whole DAG run where Airflow keeps a task state store)."""
        if self.schedule.has_store and CLEARINGS_SHARE_A_RUN:
            return (ref.run,)
        return (ref.run, ref.clearing)

    def charges_in(self, scope: tuple[int, ...]) -> list[Charge]:
        return sorted(
            (c for c in self.books.charges.values() if self.scope(c.made_in) == scope),
            key=lambda c: (c.made_in.index, c.submitted_at),
        )

    def contents_in(self, scope: tuple[int, ...]) -> set[str]:
        found: set[str] = set()
        for facts in self.tries:
            if self.scope(facts.ref) == scope:
                found.update(c for c in facts.contents.values() if c is not None)
        return found

    # -- the chain of one content's jobs --------------------------------------------------------------

    def unjustified(self, scope: tuple[int, ...]) -> list[tuple[Charge, Charge]]:
        """Each job made for a content while its earlier job in the scope could still serve: the earlier
        job neither ended in ERROR, nor was forgotten by HitPaw, nor had its answer lost (a lost answer
        licenses the hook's one resend in the same try, or a new start in a later clearing; an answer the
        kill took before it was recorded licenses a retry)."""
        by_content: dict[str, list[Charge]] = {}
        for charge in self.charges_in(scope):
            by_content.setdefault(charge.content, []).append(charge)
        bad: list[tuple[Charge, Charge]] = []
        for chain in by_content.values():
            for earlier, later in itertools.pairwise(chain):
                if not _justified(earlier, later):
                    bad.append((earlier, later))
        return bad

    # -- the checks -----------------------------------------------------------------------------------

    def check_try(self, facts: TryFacts) -> None:
        """Every invariant after ``facts``'s try. The checks of what a try reported (2's report clause,
        4) come last: they fail most often, and an example fails with its first violation only."""
        self.tries.append(facts)
        self._invariant_5(facts)
        self._invariant_1(facts)
        self._invariant_2_jobs(facts)
        self._invariant_2_saved(facts)
        self._invariant_3(facts)
        self._invariant_3_kept(facts)
        self._invariant_2_report(facts)
        self._invariant_4(facts)
        self._invariant_4_runs(facts)
        self._invariant_4_maybe_charged(facts)

    def _invariant_1(self, facts: TryFacts) -> None:
        made_now = [c for c in self.books.charges.values() if c.made_in == facts.ref]
        for charge in made_now:
            why = facts.needless.get(charge.content)
            if why == "skip":
                raise Inv1PaidForResultsKeptUnderSkip(
                    f"{facts.ref} paid for {charge.short()}, whose results an earlier try kept under "
                    "overwrite='skip' and which has not changed since"
                )
            if why == "fail":
                raise Inv1PaidThenRefusedUnderFail(
                    f"{facts.ref} paid for {charge.short()} although its result files exist and "
                    "overwrite='fail' refuses to replace them"
                )
        if facts.max_coins is not None:
            self._budget(facts, facts.max_coins)
        scope = self.scope(facts.ref)
        charges = self.charges_in(scope)
        contents = self.contents_in(scope)
        lost = sum(c.lost for c in charges)
        replaced = sum(c.ended_error_at is not None or c.forgotten_before is not None for c in charges)
        allowance = len(contents) + lost + replaced
        if len(charges) <= allowance:
            return
        detail = (
            f"scope {scope}: HitPaw charged {PRICE * len(charges)} coins for {len(charges)} jobs; allowed "
            f"{PRICE * allowance} ({len(contents)} distinct input contents + {lost} lost answers + "
            f"{replaced} jobs ended in ERROR or forgotten). Jobs: " + "; ".join(c.short() for c in charges)
        )
        bad = self.unjustified(scope)
        if not bad:
            raise Inv1PaidForNoInput(detail)
        earlier, later = bad[0]
        cls = _where(earlier, later, Inv1PaidTwiceInOneTry, Inv1PaidAgainInARetry, Inv1PaidAgainAfterAClear)
        raise cls(f"{detail}. First needless: {later.short()} while {earlier.short()} could serve")

    def _budget(self, facts: TryFacts, max_coins: int) -> None:
        """``max_coins`` (README): what a try spends fits the budget less what the earlier tries of its
        clearing spent ("counts against the same budget"; a lost answer "the budget counts at the
        price"), plus one price per lost answer of the try itself ("a lost answer sent again may cost
        one image more"). The ledger notes an answer lost twice as one possible charge: the second price
        it does not count is carried to the retry (that resend's "one image more"). Charges an earlier try
        lost to a kill or to a failing store no later try can count, and are left out."""
        clearing = [c for c in self.books.charges.values() if c.made_in.clearing == facts.ref.clearing]
        own = [c for c in clearing if c.made_in == facts.ref]
        if not own:
            return
        earlier = [c for c in clearing if c.made_in.index < facts.ref.index and not c.unknown_to_later_tries]
        carried = sum(
            f.unnoted
            for f in self.tries
            if f.ref.clearing == facts.ref.clearing and f.ref.index < facts.ref.index and f.note_kept
        )
        counted = len(earlier) - carried
        if PRICE * (counted + len(own)) <= max_coins + PRICE * facts.unanswered:
            return
        raise Inv1OverBudget(
            f"{facts.ref} paid {PRICE * len(own)} coins for {len(own)} jobs ({facts.unanswered} of them "
            f"with an answer lost) after earlier tries of clearing {facts.ref.clearing} had spent "
            f"{PRICE * counted} it could count, with max_coins={max_coins}. Jobs: "
            + "; ".join(c.short() for c in clearing)
        )

    def _invariant_2_saved(self, facts: TryFacts) -> None:
        """The ledger is saved at every end of submitting (``_ledger_store``): a kill after that (at a poll,
        at a pair) finds every job the try was told of recorded; and a try whose store refused to keep
        a job it paid for fails for good (README: a failure after paying is retried only where the
        ledger was saved)."""
        if facts.unsaved:
            shown = "; ".join(self.books.charges[job_id].short() for job_id in facts.unsaved)
            raise Inv2PaidJobUnsavedWhenSubmittingEnded(
                f"{facts.ref} was killed after submitting had ended, and no record names jobs it was "
                f"told of: {shown}"
            )
        unrecorded = [c for c in self.books.charges.values() if c.made_in == facts.ref and c.lost_to_store]
        if unrecorded and facts.outcome == "failed":
            raise Inv2RetryAllowedAfterAnUnsavedPayment(
                f"{facts.ref} failed with a retry allowed, although its store refused to keep jobs it paid "
                f"for: {'; '.join(c.short() for c in unrecorded)}"
            )

    def _invariant_2_report(self, facts: TryFacts) -> None:
        if facts.report is None:
            return
        seen: dict[str, int] = {}
        for result in facts.report:
            job_id, coins = result.get("job_id"), _coins(result)
            if isinstance(job_id, str) and coins > 0:
                seen[job_id] = seen.get(job_id, 0) + 1
        twice = {job_id: n for job_id, n in seen.items() if n > 1}
        if twice:
            raise Inv2JobChargedTwiceInAReport(
                f"{facts.ref} reports coins for one job on several results: {twice} "
                f"(results: {_brief(facts.report)})"
            )

    def _invariant_2_jobs(self, facts: TryFacts) -> None:
        bad = self.unjustified(self.scope(facts.ref))
        if bad:
            earlier, later = bad[0]
            retry: type[InvariantViolation] = Inv2SecondJobInARetry
            if not earlier.delivered:
                retry = Inv2RetryPaidAgainForALostAnswer
            elif earlier.lost_to_store:
                retry = Inv2RetryPaidAgainForAnUnrecordedJob
            cls = _where(earlier, later, Inv2SecondJobInOneTry, retry, Inv2SecondJobAfterAClear)
            raise cls(f"a second job {later.short()} for one input, while {_why_not(earlier, later)}")

    def _invariant_3(self, facts: TryFacts) -> None:
        self._check_records()
        if facts.report is None:
            return
        for result in facts.report:
            job_id = result.get("job_id")
            if not isinstance(job_id, str):
                continue
            charge = self.books.charges.get(job_id)
            if charge is None:
                raise Inv3ResultNamesNoJob(
                    f"{facts.ref}: a result names job {job_id!r}, which HitPaw never made"
                )
            if result.get("status") == "ERROR" and charge.ended_error_at is None:
                raise Inv3ResultSaysErrorOfALiveJob(
                    f"{facts.ref} reports job {charge.short()} as ERROR; HitPaw's books say {charge.status}"
                )
            identity = _identity_of(result, self.schedule.sources)
            wanted = facts.contents.get(identity) if identity is not None else None
            if result.get("status") == "COMPLETED" and wanted is not None and charge.content != wanted:
                raise Inv3ResultOfAnotherInput(
                    f"{facts.ref}: the result for {identity} is job {charge.short()}, made from "
                    f"{charge.content[:70]}, not from the input as it is ({wanted[:70]})"
                )
            res_path = result.get("res_path")
            if (
                result.get("status") == "COMPLETED"
                and not result.get("error")
                and isinstance(res_path, str)
                and res_path.startswith("file://")
            ):
                kept = _read(Path(res_path.removeprefix("file://")))
                if kept is None or kept != charge.cutout:
                    raise Inv3ResultFileIsNotTheJobs(
                        f"{facts.ref}: {res_path} is not the cut-out of job {charge.short()}"
                    )

    def _invariant_3_kept(self, facts: TryFacts) -> None:
        """After a try that succeeded with an output folder, every completed result's pair is kept there:
        the record of its input names its job, and the files are that job's."""
        output = self.schedule.output
        if facts.report is None or facts.outcome != "success" or output is None:
            return
        for result in facts.report:
            job_id = result.get("job_id")
            identity = _identity_of(result, self.schedule.sources)
            if result.get("status") != "COMPLETED" or result.get("error") or not isinstance(job_id, str):
                continue
            if identity is None or identity not in self.schedule.names:
                continue
            cutout_name, mask_name, record_name = self.schedule.names[identity]
            try:
                record = json.loads((output / record_name).read_bytes())
            except (OSError, ValueError):
                record = None
            named = record.get("job_id") if isinstance(record, dict) else None
            charge = self.books.charges.get(job_id)
            kept = (
                charge is not None
                and named == job_id
                and _read(output / cutout_name) == charge.cutout
                and _read(output / mask_name) == charge.mask
            )
            if not kept:
                raise Inv3CompletedResultNotKept(
                    f"{facts.ref} succeeded reporting {identity} as job {job_id[:8]} COMPLETED, but its "
                    f"record names {named!r} (or the pair is not that job's)"
                )

    def _check_records(self) -> None:
        output = self.schedule.output
        if output is None or not output.is_dir():
            return
        owner = {record: identity for identity, (_, _, record) in self.schedule.names.items()}
        for path in sorted(output.glob("*.hitpaw.json")):
            identity = owner.get(path.name)
            if identity is None:
                continue  # no input of this task is kept under that name
            try:
                record = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # an unreadable record vouches for nothing
            if not isinstance(record, dict):
                continue
            job_id = record.get("job_id")
            charge = self.books.charges.get(job_id) if isinstance(job_id, str) else None
            if charge is None:
                raise Inv3RecordNamesNoJob(f"{path.name} names job {job_id!r}, which HitPaw never made")
            history = (
                self.schedule.source_history.get(identity, [])
                if self.schedule.sources
                else [url_content(identity)]
            )
            fingerprint = record.get("fingerprint")
            claims = (
                fingerprint if isinstance(fingerprint, str) and fingerprint.startswith("sha256:") else None
            )
            if charge.content not in history or (claims is not None and claims != charge.content):
                raise Inv3RecordOfAnotherInput(
                    f"{path.name} (the record of {identity}) vouches for job {charge.short()}, made from "
                    f"{charge.content[:70]}; that input was {[h[:20] for h in history]}"
                    + (f", the record says {claims[:20]}" if claims else "")
                )
            cutout_name, mask_name, _ = self.schedule.names[identity]
            cutout, mask = _read(output / cutout_name), _read(output / mask_name)
            if charge.cutout is None or cutout != charge.cutout or mask != charge.mask:
                raise Inv3RecordVouchesForOtherFiles(
                    f"{path.name} vouches for {cutout_name} and {mask_name} as job {charge.short()}'s; "
                    f"the files are {'missing' if cutout is None or mask is None else 'other bytes'}"
                )

    def _invariant_4(self, facts: TryFacts) -> None:
        if facts.report is None:
            return
        scope = self.scope(facts.ref)
        charges = [c for c in self.charges_in(scope) if c.made_in.index <= facts.ref.index]
        # What the reporting try can know: every job whose answer reached the client, but of an earlier
        # try's, only those its records kept (the kill or a failing store took the others). A lost
        # answer it may count or not (as charged, when it proves a job was made): at most what HitPaw
        # took, at least what it knows.
        known = [c for c in charges if c.delivered and (c.made_in == facts.ref or not c.lost)]
        least, most = PRICE * len(known), PRICE * len(charges)
        reported = sum(_coins(r) for r in facts.report)
        if least <= reported <= most:
            return
        detail = (
            f"{facts.ref} reports {reported} coins; HitPaw charged {most} in scope {scope}, {least} of them "
            f"for jobs the try could know of. Results: {_brief(facts.report)}. "
            f"Jobs: {'; '.join(c.short() for c in charges)}"
        )
        if reported > most:
            raise Inv4OverReported(detail)
        paid_for = {r.get("job_id") for r in facts.report if _coins(r) > 0}
        reused = {r.get("job_id") for r in facts.report if r.get("reused")}
        missing = [c for c in known if c.job_id not in paid_for]
        if any(c.job_id in reused for c in missing):
            raise Inv4PaidPairReportedAsReused(detail)
        if any(c.made_in.clearing != facts.ref.clearing for c in missing):
            raise Inv4EarlierClearingNotReported(detail)
        if any(c.ended_error_at is not None or c.forgotten_before is not None for c in missing):
            raise Inv4ReplacedJobNotReported(detail)
        raise Inv4ChargeNotReported(detail)

    def _invariant_4_runs(self, facts: TryFacts) -> None:
        """A result that charges coins and is not reused names a job its run made (a kept pair of another
        run is reused, at no cost, or not reported at all)."""
        if facts.report is None:
            return
        scope = self.scope(facts.ref)
        for result in facts.report:
            job_id = result.get("job_id")
            if result.get("reused") or _coins(result) <= 0 or not isinstance(job_id, str):
                continue
            charge = self.books.charges.get(job_id)
            if charge is not None and self.scope(charge.made_in) != scope:
                raise Inv4PaidResultNamesAJobOfAnotherRun(
                    f"{facts.ref} reports {_coins(result)} coins, not reused, on a result naming job "
                    f"{charge.short()}, which scope {self.scope(charge.made_in)} made, not {scope}. "
                    f"Results: {_brief(facts.report)}"
                )

    def _invariant_4_maybe_charged(self, facts: TryFacts) -> None:
        """``maybe_charged`` (README: "for the submissions that may have cost a price"; a resend after a
        lost answer "reports maybe_charged: 1"): each input content still in the batch carries at least
        one per try of its clearing in which an answer for it was lost, as far as the ledger can know
        (not a try killed before its save, nor one whose store refused every write); and the report's
        sum is never more than its clearing's submissions that brought back no job of their own."""
        if facts.report is None:
            return
        tries = [
            f for f in self.tries if f.ref.clearing == facts.ref.clearing and f.ref.index <= facts.ref.index
        ]
        maybe: dict[str, int] = {}
        eligible: set[str] = set()
        everything = 0
        for result in facts.report:
            count = result.get("maybe_charged")
            count = count if isinstance(count, int) and not isinstance(count, bool) else 0
            everything += count
            identity = _identity_of(result, self.schedule.sources)
            if identity is None or identity in maybe:
                continue
            maybe[identity] = count
            content = facts.contents.get(identity)
            refused = (result.get("error") or {}).get("type") == "HitPawConfigurationError"
            if content is not None and not result.get("reused") and not refused:
                eligible.add(content)
        by_content: dict[str, int] = {}
        for identity, count in maybe.items():
            content = facts.contents.get(identity)
            if content is not None:
                by_content[content] = by_content.get(content, 0) + count
        for content in sorted(eligible):
            known = [
                f.ref.index
                for f in tries
                if (f is facts or f.note_kept) and f.lost_answers.get(content, 0) > 0
            ]
            if by_content.get(content, 0) < len(known):
                raise Inv4LostAnswerNotReported(
                    f"{facts.ref} reports maybe_charged={by_content.get(content, 0)} for {content[:60]}, "
                    f"whose answer was lost in tries {known} of its clearing. Results: {_brief(facts.report)}"
                )
        most = sum(f.failed_attempts for f in tries)
        reported = sum(maybe.values()) if MAYBE_CHARGED_ON_COPIES_TOLERATED else everything
        if reported > most:
            raise Inv4MaybeChargedOverReported(
                f"{facts.ref} reports maybe_charged={reported} in all; its clearing made only {most} "
                f"submissions that brought back no job of their own. Results: {_brief(facts.report)}"
            )

    def _invariant_5(self, facts: TryFacts) -> None:
        texts = list(facts.texts)
        if facts.report is not None:
            texts.append(json.dumps(facts.report, default=str))
        for text in texts:
            if self.secret in text:
                at = text.index(self.secret)
                raise Inv5SecretShown(
                    f"{facts.ref} showed HitPaw's API key: ...{text[max(0, at - 120) : at]}<KEY>..."
                )


def _justified(earlier: Charge, later: Charge) -> bool:
    if earlier.ended_error_at is not None and earlier.ended_error_at <= later.submitted_at:
        return True
    if earlier.forgotten_before is not None and earlier.forgotten_before <= later.made_in.index:
        return True
    new_clearing = later.made_in.clearing != earlier.made_in.clearing
    later_try = later.made_in.index > earlier.made_in.index
    if not earlier.delivered:
        # The hook's one resend of a lost answer (the same try), or a deliberate new start; after a kill,
        # which may have taken the note that the answer was lost, any later try.
        same_try = later.made_in.index == earlier.made_in.index
        return same_try or new_clearing or (earlier.in_killed_try and later_try)
    if earlier.lost_to_kill:
        return later_try
    return earlier.lost_to_store and new_clearing


def _why_not(earlier: Charge, later: Charge) -> str:
    """Why ``earlier`` did not license ``later`` (see :func:`_justified`)."""
    if not earlier.delivered:
        return (
            f"its job {earlier.short()} had its answer lost in an earlier try of the same clearing: a lost "
            "answer licenses the hook's one resend in its own try, and a retry must not pay for it again"
        )
    if earlier.lost_to_kill:
        return f"its job {earlier.short()} was lost to a kill in the same try"
    if earlier.lost_to_store:
        return (
            f"its job {earlier.short()} went unrecorded (the task state store refused its writes) in an "
            "earlier try of the same clearing, whose failure should have been final"
        )
    return (
        f"its job {earlier.short()} had neither ended in ERROR nor been forgotten, and its answer had arrived"
    )


def _where(
    earlier: Charge,
    later: Charge,
    same_try: type[InvariantViolation],
    retry: type[InvariantViolation],
    clear: type[InvariantViolation],
) -> type[InvariantViolation]:
    if later.made_in.index == earlier.made_in.index:
        return same_try
    if later.made_in.clearing == earlier.made_in.clearing:
        return retry
    return clear


def _coins(result: Mapping[str, Any]) -> int:
    coins = result.get("consume_coins")
    return coins if isinstance(coins, int) and not isinstance(coins, bool) else 0


def _identity_of(result: Mapping[str, Any], sources: bool) -> str | None:
    """The identity of the input a result is for: its URL, or its source's URI."""
    given = result.get("source_path") if sources else result.get("file_url")
    if not isinstance(given, str):
        return None
    given = given.strip()
    if sources and not given.startswith("file://"):
        return "file://" + given
    return given


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _brief(report: Iterable[Mapping[str, Any]]) -> str:
    def one(result: Mapping[str, Any]) -> str:
        job = result.get("job_id")
        shown = job[:8] if isinstance(job, str) else None
        flags = " reused" if result.get("reused") else ""
        if result.get("maybe_charged"):
            flags += f" maybe={result.get('maybe_charged')}"
        return f"{shown}:{result.get('status')}:{result.get('consume_coins')}{flags}"

    return "[" + ", ".join(one(r) for r in report) + "]"


def job_ids_in(value: Any, known: Iterable[str]) -> set[str]:
    """The known job ids mentioned anywhere in a JSON value (a task state store's contents)."""
    wanted = set(known)
    found: set[str] = set()

    def walk(item: Any) -> Iterator[str]:
        if isinstance(item, str):
            yield item
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                yield str(key)
                yield from walk(inner)
        elif isinstance(item, list | tuple):
            for inner in item:
                yield from walk(inner)

    for text in walk(value):
        if text in wanted:
            found.add(text)
        elif any(job_id in text for job_id in wanted):  # a job id inside a longer string
            found.update(job_id for job_id in wanted if job_id in text)
    return found
