"""Money and data invariants of ``SegmentImageBatchOperator``, under random schedules of tries, retries,
clears, DAG runs and faults, judged after every try against the local HitPaw emulator's own books.

How a schedule runs
===================

The operator runs in this process, against the emulator (a real HTTP server on 127.0.0.1). A *try* is a
new operator instance executed with a context whose ``ti.try_number`` grows by one; when it defers, its
trigger (rebuilt from what it serialized) runs to its one event and a new operator instance resumes with
that event and the deferral's kwargs, both round-tripped through JSON as the metadata database returns
them. On an Airflow line that keeps a task state store (3.3 and later) every try of a DAG run gets the
same store (:class:`~tests.invariants.conftest.ModelStateStore`); before 3.3 the context has none.
Airflow retries a try that failed with anything but ``AirflowFailException`` (a killed worker too) while
``try_number <= max_tries``; a *clear* starts a new clearing (``max_tries = try_number + retries``, so the
next try is the first of the clearing for ``first_try_of_clearing``); a *new DAG run* starts over with a
new context and a new store, keeping into the same output folder.

Each example defines one task:

- inputs: 1 to 5 sample URLs of the emulator (``?n=`` variants; the same URL may come twice, and a
  ``broken.jpg`` job ends in ERROR), or 1 to 5 ``source_paths`` in a local folder (copies of the samples;
  the same bytes under two names, the same file written as a path and as a ``file://`` URI, a file that
  appears only later); ``output_path`` a local folder or none; ``overwrite`` ``overwrite``, ``fail`` or
  ``skip``; ``max_coins`` sometimes; deferrable or not; 0 to 3 retries; ``fail_on_error`` with or without
  ``max_failed``; 1 or 2 in flight. Jobs take 0.05 s, polls come every 0.05 s, back-off is in hundredths.

Between tries the schedule may edit a source (or make a late one appear), make HitPaw forget a job
(``expire_job``), clear the task, or start a new DAG run. Each try may meet, for itself only: lost
submission answers (``drop`` or ``500`` with ``after_commit``: HitPaw charged, the answer is lost; the
hook sends once more, the ``500``, which carries HitPaw's own error code, as if nothing had been done),
5xx, gateway 503 and 429 storms on submissions, a 5xx storm on status polls, a failed status poll (an
answer over the 1 MiB cap, a redirect; more often at a retry's first look at the jobs its ledger
holds), a hostile server answering a bad job id or the same job id twice (the jobs are created and
charged all the same), the n-th new job or every new job ending in ERROR, a task state store whose
writes fail (one try in two without an output folder), an output folder that refuses writes
(``PermissionError`` where the pair is written: the tests run as root, whom a read-only folder does not
stop), a deadline shorter than the jobs (the batch's own ``timeout``), and an interruption at the n-th
submission (after HitPaw answered), status request from the worker, or kept pair: Airflow's
``execution_timeout`` (an exception the try may clean up after) or a *kill* (SIGKILL: from that instant
nothing of the try counts, no store write, no XCom, no file written; see ``conftest.py``).

The invariants
==============

HitPaw's books (every job with its ``file_url`` and status, the coins, kept here also for the jobs it
forgets) are the truth; the harness also sees every submission attempt (what was sent, and the job id
its answer carried, if any). Words used below:

- the *content* of an input: a URL is its own content (README: "the same input" is, for a URL, the URL);
  a source file's content is its bytes, and a job's content is its ``file_url``, or the bytes of the
  uploaded object it names.
- a *lost answer*: a job HitPaw made whose id never reached the client (the answer dropped, replaced by a
  5xx, or carrying another id), or whose id reached a worker that was killed before the id was in the task
  state store, or that the store refused to keep (it failed every write of that try). No later try can
  know such a job.
- a *replaced* job: one that ended in ERROR, or that HitPaw forgot (expired) — resubmitting it is on
  purpose.
- *a run* (the scope of invariants 1, 2 and 4): one clearing of one DAG run — its first try and every
  retry Airflow gives it, up to the next clear or the next DAG run. The README makes clearing "a
  deliberate new start on every line: it submits, and pays, again", so a clear opens a new run, and so
  does a new DAG run (``run_id``), with its own context and store. What carries over between runs is the
  output folder, and with it invariant 1's last clause. (``model.CLEARINGS_SHARE_A_RUN = True`` makes a
  DAG run's clearings one run where a task state store outlives them: then a clear pays for nothing an
  earlier clearing was told of, and reports what that clearing paid.) Within a run, every try counts:
  on 3.3 through the task state store, on every line through a ledger in ``output_path``; where
  neither is kept a retry knows nothing of the earlier tries, and must not pay again for what they paid
  (README: it refuses to submit blindly).

1. Coins. In each run, the jobs HitPaw charged for number at most: one per distinct input content the
   run's tries were given, plus one per lost answer, plus one per replaced job. With ``max_coins``, each
   try spends at most ``max_coins`` less what the earlier tries of its clearing spent (README: it "counts
   against the same budget", a lost answer "the budget counts at the price"), plus one price per answer
   the try itself lost ("a lost answer sent again may cost one image more"); what the earlier tries'
   ledger cannot count is left out of "spent": charges lost to a kill or a failing store, and the second
   price of an answer lost twice (noted once) or of one that carried HitPaw's own error code (which the
   hook takes as "nothing done"). And over the whole history: a try never pays for a content whose
   results it need not or cannot keep — under ``overwrite="skip"`` when every input with that content
   has its pair kept in ``output_path``, made by a job from that very content (record, job and bytes
   agree); under ``overwrite="fail"`` when every input with that content already has a result file
   there.
2. Jobs. HitPaw took exactly one price per job it made, and no report counts one job's coins on two
   results. For each input content, a second job in a run is made only if the earlier one was replaced,
   or its answer was lost — and then an answer lost on the way licenses the hook's one resend in the same
   try, or a new start in a later clearing (or any later try, when the try that lost it was killed and
   its note of the loss may have gone with it); one the kill took before it was recorded, a later try;
   one the store refused, a later clearing (README: that try's failure is final, so a try that paid for
   a job its store refused to keep never ends with a retry allowed) — never because a retry forgot (or
   never recorded) a job it had been told of. The ledger is saved at every end of submitting: a try
   killed after that (at a poll or a pair, where a ledger is kept and its store did not fail) has every
   job it was told of recorded, and such a kill licenses nothing.
3. Data. Every record ``<stem>-<hash>.hitpaw.json`` in ``output_path`` vouches for the job made from its
   own input (for a URL the job's ``file_url`` is that URL; for a source the uploaded bytes are bytes that
   source had, and the record's fingerprint says the same), and the pair beside it is that job's cut-out
   and mask, byte for byte: no record vouches for a file the run did not write. Every result a try reports
   tells the truth: a job it names exists; ``ERROR`` only for a job HitPaw ended in ERROR; a
   ``COMPLETED`` result is the job made from that input as it is now, and its ``res_path`` holds that
   job's cut-out; after a try that succeeded with an output folder, every ``COMPLETED`` result's pair is
   kept there (the record of its input names its job, and the files are that job's).
4. Reports. The coins a try reports (the sum of ``consume_coins`` over the results it returns, or pushes
   to XCom ``results`` when it fails) equal the coins HitPaw charged in its run up to then, a job shared
   by two inputs counted once — except that a charge no client could know of (a lost answer: its job,
   or a job an earlier try lost to a kill or to a failing store) may be left out: the report lies between
   what the try could know of and what HitPaw took. Without lost answers, the two are one number. A
   result that charges coins and is not ``reused`` names a job of its own run. ``maybe_charged``
   (README: "for the submissions that may have cost a price"): each input content still in the batch
   carries at least one per try of its clearing that lost an answer for it (its hook's resend after a
   lost answer included), as far as the ledger can know (not a try killed before its save, nor one
   whose store refused every write); and the report's sum (each input once) never exceeds its clearing's
   submission attempts that brought back no job of their own.
5. Secrets. The emulator's API key never appears in results, XCom, exception texts or logs.

Fixed schedules beside the machines pin what the random ones reach too rarely (a retry after an answer
lost twice, a resumed try that has its ledger only from XCom, a failing store, a retry whose first
status request fails, a kill after submitting, a retry's budget after a lost answer, another run's
pair, an input refused by a retry). Today's code fails several of these: that is what the machine is
for (see the lead's ledger rewrite).
Failing the task (``AirflowFailException`` and the like) is always allowed: the invariants are about money
and data, not success. ``HITPAW_INVARIANT_EXAMPLES`` raises the number of examples per test for a deeper
local run; the default keeps the module within about a minute and a half on two cores.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import as_the_database_returns_it
from tests.invariants import model
from tests.invariants.conftest import Harness, Interruption, ModelStateStore, ModelTaskInstance
from tests.invariants.model import (
    Accounts,
    Books,
    Schedule,
    TryFacts,
    TryRef,
    job_ids_in,
    sha256_content,
    url_content,
)

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn

#: How long a job stays CONVERTING, and a try's poll interval (the operator's floor of 1 s is lifted).
JOB_SECONDS: Final = 0.05
POLL_SECONDS: Final = 0.05
#: A try with a deadline: its jobs take this long, its batch gives up after DEADLINE_SECONDS.
SLOW_JOB_SECONDS: Final = 0.6
DEADLINE_SECONDS: Final = 0.2
SAMPLES: Final = ("shoe.jpg", "portrait.png", "product.webp", "mug.jpg")
SOURCE_SAMPLES: Final = ("shoe.jpg", "mug.jpg")
SUBMIT: Final = "/api/image-segmentation"
STATUS: Final = "/api/task-status"

#: The faults a try may meet, by the name the printed schedule shows.
FAULTS: Final[dict[str, tuple[str, ...]]] = {
    "lost answer": (f"drop:after_commit=true,first_n=1,paths={SUBMIT}",),
    "lost answer twice": (f"drop:after_commit=true,first_n=2,paths={SUBMIT}",),
    "500 after charging": (f"500:after_commit=true,first_n=1,paths={SUBMIT}",),
    "5xx storm": (f"500:first_n=6,paths={SUBMIT}",),
    "gateway 503": (f"503_html:first_n=2,paths={SUBMIT}",),
    "429 storm": (f"429:first_n=4,retry_after=0.02,paths={SUBMIT}",),
    "status 5xx storm": (f"500:first_n=4,paths={STATUS}",),
    "status over cap": (f"huge_json:first_n=1,size_bytes=1100000,paths={STATUS}",),
    "status redirect": (f"redirect:first_n=1,location=http://127.0.0.1:9/elsewhere,paths={STATUS}",),
    "bad job id": ('bad_job_id:first_n=1,value="../../job"',),
    "same job id": ("same_job_id:first_n=2",),
}


# --- what a schedule is made of ------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One ``source_paths`` entry: ``img<file>.jpg`` (``as_uri``: written ``file:///...``), holding the
    bytes of ``tag`` (equal tags, equal bytes); ``late``: the file appears only when edited in."""

    file: int
    tag: int
    as_uri: bool = False
    late: bool = False


@dataclass(frozen=True)
class Task:
    """The task every try of an example runs."""

    urls: tuple[tuple[str, int], ...] = ()
    sources: tuple[Source, ...] = ()
    output: bool = False
    overwrite: str = "overwrite"
    max_coins: int | None = None
    deferrable: bool = True
    retries: int = 1
    fail_on_error: bool = True
    max_failed: int | None = None
    max_in_flight: int = 1


@dataclass(frozen=True)
class TryPlan:
    """What one try meets."""

    faults: tuple[str, ...] = ()
    #: The n-th submission of the try whose job ends in ERROR; ``jobs_fail``: every new job does.
    job_fails: int | None = None
    jobs_fail: bool = False
    store_fails: bool = False
    keep_fails: bool = False
    deadline: bool = False
    interruption: Interruption | None = None


def _sometimes(draw: DrawFn, one_in: int) -> bool:
    """True once in ``one_in`` draws (shrinking towards False)."""
    return draw(st.integers(1, one_in)) == one_in


def _options(draw: DrawFn, output: bool) -> dict[str, Any]:
    fail_on_error = not _sometimes(draw, 4)
    return {
        "output": output,
        "overwrite": draw(st.sampled_from(["overwrite", "skip", "fail"])) if output else "overwrite",
        "max_coins": draw(st.none() | st.sampled_from([20, 40, 60, 100])),
        "deferrable": draw(st.booleans().map(lambda blocking: not blocking)),
        "retries": draw(st.integers(1, 3) | st.just(0)),
        "fail_on_error": fail_on_error,
        "max_failed": 1 if fail_on_error and _sometimes(draw, 4) else None,
        "max_in_flight": 2 if _sometimes(draw, 4) else 1,
    }


@st.composite
def url_tasks(draw: DrawFn) -> Task:
    count = draw(st.integers(1, 5))
    urls: list[tuple[str, int]] = []
    for index in range(count):
        if index and _sometimes(draw, 10):  # a URL given twice
            urls.append(urls[draw(st.integers(0, index - 1))])
        else:
            broken = _sometimes(draw, 4)  # its job ends in ERROR
            urls.append(("broken.jpg" if broken else draw(st.sampled_from(SAMPLES)), index))
    return Task(urls=tuple(urls), **_options(draw, draw(st.integers(0, 2)) > 0))


@st.composite
def source_tasks(draw: DrawFn) -> Task:
    options = _options(draw, draw(st.integers(0, 3)) > 0)
    # A source that appears only later is refused until then: only a lenient task goes on without it.
    lenient = not options["fail_on_error"] or options["max_failed"] is not None
    count = draw(st.integers(1, 5))
    sources: list[Source] = []
    for index in range(count):
        if index and _sometimes(draw, 10):  # the same file once more, the other way written
            earlier = sources[draw(st.integers(0, index - 1))]
            sources.append(Source(earlier.file, earlier.tag, as_uri=not earlier.as_uri, late=earlier.late))
            continue
        late = lenient and not any(s.late for s in sources) and draw(st.integers(0, 3)) == 3
        # Equal tags, equal bytes: now and then a file holds the same photo as an earlier one.
        tag = sources[draw(st.integers(0, index - 1))].tag if index and _sometimes(draw, 8) else index
        sources.append(Source(index, tag, late=late))
    return Task(sources=tuple(sources), **options)


#: The faults a try draws from: those that cost money (lost answers) come two to four times as often, an
#: answer lost twice (what a retry must not send again) most.
FAULT_CHOICES: Final = (
    *FAULTS,
    "lost answer",
    "lost answer twice",
    "lost answer twice",
    "lost answer twice",
    "500 after charging",
)
#: What a retry's first look at the jobs it waits for again may meet: a status it cannot read.
STATUS_FAULTS: Final = ("status over cap", "status redirect")


@st.composite
def try_plans(draw: DrawFn, output: bool = True) -> TryPlan:
    """A try's plan; without an output folder the task state store (its only ledger) refuses every write
    once in two tries, with one once in six."""
    drawn = [draw(st.sampled_from(FAULT_CHOICES)) for _ in range(draw(st.sampled_from([0, 1, 1, 2])))]
    interruption = None
    if _sometimes(draw, 3):
        interruption = Interruption(
            kind=draw(st.sampled_from(["kill", "timeout"])),
            at=draw(st.sampled_from(["submit", "poll", "keep"])),
            nth=draw(st.integers(1, 3)),
        )
    return TryPlan(
        faults=tuple(dict.fromkeys(drawn)),
        job_fails=draw(st.integers(1, 3)) if _sometimes(draw, 3) else None,
        jobs_fail=_sometimes(draw, 6),
        store_fails=_sometimes(draw, 6 if output else 2),
        keep_fails=_sometimes(draw, 6),
        deadline=_sometimes(draw, 8),
        interruption=interruption,
    )


# --- the machine -------------------------------------------------------------------------------------


@dataclass
class Answers:
    """What became of one try's submission answers, by HitPaw's books and what reached the client."""

    #: Per content: jobs whose answer was lost on the way (a dropped answer, a 5xx without HitPaw's own
    #: error code): what the try knew may have been charged, noted in its ledger once per content.
    lost: dict[str, int] = field(default_factory=dict)
    #: Jobs whose answer brought no job id at all (lost, or carrying HitPaw's error code); an answer
    #: naming another job is refused and charged at its price.
    unanswered: int = 0
    #: Of those, the ones the try's ledger does not count: beyond the one note of a content's lost
    #: answer (an answer lost twice), or taken as "nothing done" (HitPaw's error code).
    unnoted: int = 0
    #: Attempts that brought back no job of their own.
    failed: int = 0


class BatchMoneyMachine(RuleBasedStateMachine):
    """Runs one task through a random schedule; the accounts judge every try (model.Accounts)."""

    harness: ClassVar[Harness]
    #: One clearing of one DAG run, retried up to three times: no clear, no new DAG run.
    one_clearing: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        harness = self.harness
        harness.examples += 1
        harness.emulator.reset()
        harness.emulator.configure(job_seconds=JOB_SECONDS)
        with harness._lock:
            harness.delivered.clear()
        self.folder = harness.root / f"example-{harness.examples}"
        (self.folder / "in").mkdir(parents=True)
        self.books = Books(harness.emulator, int(harness.emulator.state()["coins"]))
        self.task = Task()
        self.accounts = Accounts(self.books, Schedule(harness.has_store, False), harness.emulator.api_key)
        self.given: list[str] = []
        #: Each source's path -> the bytes it is to have (written now, or when a late one appears).
        self.planned: dict[Path, bytes] = {}
        self.edits = 0
        # Airflow's view of the task instance.
        self.run, self.clearing, self.try_index = 1, 1, 0
        self.try_number, self.max_tries = 0, 0
        self.ti_state = "fresh"
        self.tries_in_run = self.tries_in_clearing = 0
        self.store: ModelStateStore | None = None

    # -- set-up ---------------------------------------------------------------------------------------

    def define_task(self, task: Task) -> None:
        """The task of the example (each subclass draws its kind of task)."""
        if self.one_clearing:
            task = replace(task, retries=3)
        self.task = task
        self.max_tries = task.retries
        self.store = self._new_store()
        harness = self.harness
        schedule = self.accounts.schedule
        schedule.sources = bool(task.sources)
        if task.output:
            schedule.output = self.folder / "out"
        if task.urls:
            self.given = [f"{harness.emulator.sample_url(name)}?n={n}" for name, n in task.urls]
        else:
            samples = {name: _get(harness.emulator.sample_url(name)) for name in SOURCE_SAMPLES}
            for source in task.sources:
                path = self.folder / "in" / f"img{source.file}.jpg"
                base = samples[SOURCE_SAMPLES[source.tag % len(SOURCE_SAMPLES)]]
                self.planned.setdefault(path, base + f"tag {source.tag}".encode())
                self.given.append(path.as_uri() if source.as_uri else str(path))
                if not source.late:
                    self._write(path, self.planned[path])
        from airflow_provider_hitpaw._kept import record_name
        from airflow_provider_hitpaw.storage import result_names

        for identity in self._identities():
            cutout, mask = result_names(identity)
            schedule.names[identity] = (cutout, mask, record_name(cutout))

    def _new_store(self) -> ModelStateStore | None:
        return ModelStateStore(self.harness) if self.harness.has_store else None

    def _identities(self) -> list[str]:
        if self.task.urls:
            return list(dict.fromkeys(self.given))
        return list(dict.fromkeys(Path(item.removeprefix("file://")).as_uri() for item in self.given))

    def _write(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        history = self.accounts.schedule.source_history.setdefault(path.as_uri(), [])
        history.append(sha256_content(data))

    # -- between tries --------------------------------------------------------------------------------

    @precondition(lambda self: bool(self.task.sources))
    @rule(pick=st.integers(0, 4))
    def edit_a_source(self, pick: int) -> None:
        """A source is edited, or a late one appears, between two tries."""
        self._edit(pick)

    @precondition(lambda self: bool(self.task.sources) and self.ti_state == "up_for_retry")
    @rule(pick=st.integers(0, 4))
    def edit_a_source_before_the_retry(self, pick: int) -> None:
        """The same while Airflow waits to retry: a retry that meets an edited input comes more often."""
        self._edit(pick)

    def _edit(self, pick: int) -> None:
        paths = sorted(self.planned)
        path = paths[pick % len(paths)]
        self.edits += 1
        edited = self.planned[path] + f" edit {self.edits}".encode()
        data = edited if path.exists() else self.planned[path]
        self._write(path, data)

    @precondition(lambda self: bool(self.books.charges))
    @rule(pick=st.integers(0, 9))
    def hitpaw_forgets_a_job(self, pick: int) -> None:
        """HitPaw forgets a job (its 8 days are over), after its books were read."""
        self.books.sync(None, self._delivered())
        alive = [c for c in self.books.charges.values() if c.forgotten_before is None]
        if not alive:
            return
        charge = alive[pick % len(alive)]
        self.harness.emulator.expire_job(charge.job_id)
        self.books.forget(charge.job_id, before_try=self.try_index + 1)

    @precondition(lambda self: self._ended() and self.tries_in_clearing > 0)
    @rule()
    def clear(self) -> None:
        """The task is cleared: a new clearing of the same DAG run (Airflow raises max_tries)."""
        self.max_tries = self.try_number + self.task.retries
        self.clearing += 1
        self.tries_in_clearing = 0
        self.ti_state = "fresh"

    @precondition(lambda self: self._ended() and self.tries_in_run > 0)
    @rule()
    def new_dag_run(self) -> None:
        """A new DAG run of the same task: a new context and store, the same output folder."""
        self.run += 1
        self.clearing += 1
        self.try_number, self.max_tries = 0, self.task.retries
        self.store = self._new_store()
        self.tries_in_run = self.tries_in_clearing = 0
        self.ti_state = "fresh"

    def _ended(self) -> bool:
        """Whether the task instance has ended (Airflow retries no more), and may be cleared or run anew."""
        return not self.one_clearing and self.ti_state in ("success", "failed")

    # -- a try ----------------------------------------------------------------------------------------

    @precondition(lambda self: self.ti_state in ("fresh", "up_for_retry"))
    @rule()
    def run_quiet_try(self) -> None:
        """The next try of the current clearing (its first, or Airflow's retry), meeting no fault."""
        self._try(TryPlan())

    @precondition(lambda self: self.ti_state in ("fresh", "up_for_retry"))
    @rule(data=st.data())
    def run_try(self, data: st.DataObject) -> None:
        """The next try of the current clearing, meeting what its plan says."""
        self._try(data.draw(try_plans(self.task.output), label="plan"))

    @precondition(lambda self: self.ti_state == "up_for_retry" and self._live_jobs())
    @rule(fault=st.sampled_from(STATUS_FAULTS))
    def retry_meets_a_failing_status(self, fault: str) -> None:
        """A retry whose first status request for the jobs its ledger holds fails (not a job HitPaw
        forgot: it must not pay again)."""
        self._try(TryPlan(faults=(fault,)))

    def _live_jobs(self) -> bool:
        """Whether the current clearing made a job its tries were told of that may still end well."""
        return any(
            c.made_in.clearing == self.clearing
            and not c.lost
            and c.ended_error_at is None
            and c.forgotten_before is None
            for c in self.books.charges.values()
        )

    def _try(self, plan: TryPlan) -> None:
        harness = self.harness
        ref = TryRef(self.try_index + 1, self.run, self.clearing, self.try_number + 1)
        self.books.sync(None, self._delivered())  # results of jobs that ended since, before judging reuse
        contents = self._contents()
        needless = self._needless(contents)
        harness.read_logs()  # what came before this try is not its text
        emulator = harness.emulator
        emulator.set_faults([rule for name in plan.faults for rule in FAULTS[name]])
        if plan.jobs_fail or plan.deadline:
            emulator.configure(
                force_error=plan.jobs_fail or None, job_seconds=SLOW_JOB_SECONDS if plan.deadline else None
            )
        if self.store is not None:
            self.store.writes_fail = plan.store_fails
        harness.arm(plan.interruption, plan.keep_fails, self.accounts.schedule.output, plan.job_fails)
        ti = ModelTaskInstance(harness, ref.try_number, self.max_tries, f"run-{self.run}")
        context: dict[str, Any] = {"ti": ti}
        if self.store is not None:
            context["task_state_store"] = self.store
        try:
            error, report = self._execute(context, plan)
            harness.wait_idle()
            harness.undo_after_kill()
        finally:
            harness.disarm()
            emulator.clear_faults()
            emulator.configure(force_error=False, job_seconds=JOB_SECONDS)
            if self.store is not None:
                self.store.writes_fail = False
        killed = harness.dead
        self.books.sync(ref, self._delivered())
        with harness._lock:
            attempts = list(harness.attempts)
        # A ledger is kept (the output folder, else the task state store) and saved at every end of
        # submitting: a kill at a poll or a pair comes after that save (a poll before submitting, in a
        # retry's first look at its jobs, comes before this try paid for anything).
        store_failed = plan.store_fails and self.store is not None and not self.task.output
        ledger_kept = self.task.output or self.store is not None
        after_submitting = plan.interruption is not None and plan.interruption.at in ("poll", "keep")
        saved = ledger_kept and not store_failed and after_submitting
        unsaved: list[str] = []
        if killed or store_failed:
            # What no later try can know: answers the kill, or a store refusing every write, kept out of
            # every place a later try reads (the task state store, the output folder).
            recorded = self._recorded()
            for charge in self.books.charges.values():
                if charge.made_in != ref:
                    continue
                charge.in_killed_try = killed and not saved
                charge.in_store_failed_try = store_failed
                if charge.delivered and charge.job_id not in recorded:
                    if killed and saved:
                        unsaved.append(charge.job_id)  # not a license to pay again: a violation
                        continue
                    charge.lost_to_kill = killed
                    charge.lost_to_store = not killed
        outcome = self._advance(ref, error, killed)
        if outcome in ("failed", "failed_final"):
            pushed = ti.xcom.get("results")
            report = pushed if isinstance(pushed, list) else None
        texts = [harness.read_logs(), json.dumps(ti.xcom, default=str)]
        texts.extend(_exception_texts(error))
        answers = self._answers(ref, attempts)
        self.accounts.check_try(
            TryFacts(
                ref,
                contents,
                needless,
                self.task.max_coins,
                outcome,
                report,
                texts,
                lost_answers=answers.lost,
                unanswered=answers.unanswered,
                unnoted=answers.unnoted,
                failed_attempts=answers.failed,
                note_kept=not store_failed and (not killed or saved),
                unsaved=unsaved,
            )
        )

    def _answers(self, ref: TryRef, attempts: list[tuple[str, str | None, bool]]) -> Answers:
        """What became of the answers to the try's submissions (see :class:`Answers`)."""
        charges = self.books.charges
        made = [c for c in charges.values() if c.made_in == ref]
        refused: dict[str, int] = {}
        coded: dict[str, int] = {}
        answers = Answers()
        for sent, job_id, error_code in attempts:
            answered = charges.get(job_id) if job_id is not None else None
            if answered is not None and answered.file_url == sent and answered.made_in == ref:
                continue
            answers.failed += 1
            if job_id is not None:  # an answer came, naming a job that is not the one this made
                refused[sent] = refused.get(sent, 0) + 1
            elif error_code:
                coded[sent] = coded.get(sent, 0) + 1
        missing: dict[str, int] = {}
        content_of: dict[str, str] = {}
        for charge in made:
            if not charge.delivered:
                missing[charge.file_url] = missing.get(charge.file_url, 0) + 1
                content_of[charge.file_url] = charge.content
        for file_url, count in missing.items():
            unanswered = max(0, count - refused.get(file_url, 0))
            lost = max(0, unanswered - coded.get(file_url, 0))
            if lost:
                content = content_of[file_url]
                answers.lost[content] = answers.lost.get(content, 0) + lost
            answers.unanswered += unanswered
            answers.unnoted += max(0, unanswered - min(1, lost))
        return answers

    def _execute(
        self, context: dict[str, Any], plan: TryPlan
    ) -> tuple[BaseException | None, list[dict[str, Any]] | None]:
        from airflow.providers.common.compat.sdk import TaskDeferred

        try:
            try:
                return None, self._operator(plan).execute(context)
            except TaskDeferred as deferred:
                event = _one_event(deferred.trigger)
                kwargs = as_the_database_returns_it(deferred.kwargs or {})
                resumed = self._operator(plan)  # a new worker process resumes the task
                return None, resumed.execute_complete(context, as_the_database_returns_it(event), **kwargs)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # the try failed (or was killed): an outcome, not a test error
            return err, None

    def _operator(self, plan: TryPlan) -> Any:
        from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator

        task = self.task
        operator = SegmentImageBatchOperator(
            task_id="batch",
            file_urls=list(self.given) if task.urls else None,
            source_paths=list(self.given) if task.sources else None,
            output_path=f"file://{self.folder / 'out'}" if task.output else None,
            overwrite=task.overwrite,
            max_in_flight=task.max_in_flight,
            poll_interval=1,
            min_deferred_seconds=0,
            timeout=120,
            fail_on_error=task.fail_on_error,
            max_failed=task.max_failed,
            max_coins=task.max_coins,
            deferrable=task.deferrable,
            retries=task.retries,
        )
        operator.poll_interval = POLL_SECONDS  # below the 1 s floor a user gets: tests need not wait
        if plan.deadline:
            operator.timeout = DEADLINE_SECONDS
        return operator

    def _advance(self, ref: TryRef, error: BaseException | None, killed: bool) -> str:
        """Airflow's bookkeeping after a try; the try's outcome."""
        from airflow.providers.common.compat.sdk import AirflowFailException

        self.try_index, self.try_number = ref.index, ref.try_number
        self.tries_in_run += 1
        self.tries_in_clearing += 1
        if killed:
            outcome = "killed"
        elif error is None:
            outcome = "success"
        elif isinstance(error, AirflowFailException):
            outcome = "failed_final"
        else:
            outcome = "failed"
        if outcome == "success":
            self.ti_state = "success"
        elif outcome == "failed_final" or self.try_number > self.max_tries:
            self.ti_state = "failed"
        else:
            self.ti_state = "up_for_retry"
        return outcome

    # -- what the checks need -------------------------------------------------------------------------

    def _recorded(self) -> set[str]:
        """The job ids a later try could find: in the task state store, or in any file of the output
        folder (records, a ledger kept there)."""
        known = self.books.charges
        found = job_ids_in(self.store.values if self.store is not None else {}, known)
        output = self.accounts.schedule.output
        if output is not None and output.is_dir():
            for path in output.rglob("*"):
                if path.is_file() and path.suffix != ".png":
                    text = path.read_bytes().decode("utf-8", errors="replace")
                    found.update(job_id for job_id in known if job_id in text)
        return found

    def _delivered(self) -> set[str]:
        with self.harness._lock:
            return set(self.harness.delivered)

    def _contents(self) -> dict[str, str | None]:
        """Each input identity's content as the try starts (None: the source is not there yet)."""
        found: dict[str, str | None] = {}
        for identity in self._identities():
            if self.task.urls:
                found[identity] = url_content(identity)
                continue
            path = Path(identity.removeprefix("file://"))
            found[identity] = sha256_content(path.read_bytes()) if path.exists() else None
        return found

    def _needless(self, contents: dict[str, str | None]) -> dict[str, str]:
        """The contents a try must not pay for: every input with the content is kept (``skip``) or has
        a result file (``fail``) in ``output_path``."""
        output = self.accounts.schedule.output
        policy = self.task.overwrite
        if output is None or policy == "overwrite":
            return {}
        done: dict[str, list[bool]] = {}
        for identity, content in contents.items():
            if content is None:
                continue
            cutout, mask, record = self.accounts.schedule.names[identity]
            if policy == "fail":
                finished = (output / cutout).exists() or (output / mask).exists()
            else:
                finished = self._kept(output, identity, content, (cutout, mask, record))
            done.setdefault(content, []).append(finished)
        return {content: policy for content, flags in done.items() if all(flags)}

    def _kept(self, output: Path, identity: str, content: str, names: tuple[str, str, str]) -> bool:
        """Whether the pair of ``identity`` is kept: its record names a job made from ``content``, and
        both files are that job's."""
        try:
            record = json.loads((output / names[2]).read_bytes())
            cutout, mask = (output / names[0]).read_bytes(), (output / names[1]).read_bytes()
        except (OSError, ValueError):
            return False
        job_id = record.get("job_id") if isinstance(record, dict) else None
        charge = self.books.charges.get(job_id) if isinstance(job_id, str) else None
        return (
            charge is not None
            and charge.content == content
            and charge.cutout == cutout
            and charge.mask == mask
        )

    def teardown(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)  # shrinking makes thousands of examples


class UrlBatchMachine(BatchMoneyMachine):
    """Batches of URLs."""

    @initialize(task=url_tasks())
    def define_url_task(self, task: Task) -> None:
        self.define_task(task)


class SourceBatchMachine(BatchMoneyMachine):
    """Batches of files uploaded through HitPaw's pre-signed upload."""

    @initialize(task=source_tasks())
    def define_source_task(self, task: Task) -> None:
        self.define_task(task)


class RetriedSourceBatchMachine(SourceBatchMachine):
    """Files again, in one clearing retried up to three times: what a retry meets (an edited or late
    source, a forgotten job, a failure after paying) comes more often than among clears and new runs."""

    one_clearing = True


def _one_event(trigger: Any) -> dict[str, Any]:
    """What the triggerer does: rebuild the trigger from what it serialized, run it to its one event."""
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**as_the_database_returns_it(kwargs))

    async def first() -> dict[str, Any]:
        async for event in rebuilt.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(first())


def _exception_texts(error: BaseException | None) -> list[str]:
    texts: list[str] = []
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        texts.extend([str(error), repr(error)])
        error = error.__cause__ or error.__context__
    return texts


def _get(url: str) -> bytes:
    import requests

    answer = requests.get(url, timeout=10)
    answer.raise_for_status()
    return answer.content


# --- the tests ---------------------------------------------------------------------------------------


def _examples(default: int) -> int:
    return int(os.environ.get("HITPAW_INVARIANT_EXAMPLES", default))


def _run(harness: Harness, kind: type[BatchMoneyMachine], examples: int) -> None:
    machine = type(kind.__name__, (kind,), {"harness": harness})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=_examples(examples),
            stateful_step_count=12,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[
                HealthCheck.too_slow,
                HealthCheck.data_too_large,
                HealthCheck.filter_too_much,
                HealthCheck.large_base_example,
            ],
        ),
    )


def _check_the_taps(harness: Harness) -> None:
    """The schedules went through every seam the harness taps (else its faults were silently off)."""
    for tap in ("answers", "submit", "poll", "keep"):
        assert harness.seen.get(tap, 0) > 0, f"the harness's {tap!r} tap never fired: {harness.seen}"


@pytest.mark.timeout(600)
def test_money_and_data_with_urls(invariant_harness: Harness) -> None:
    _run(invariant_harness, UrlBatchMachine, examples=50)
    _check_the_taps(invariant_harness)


@pytest.mark.timeout(600)
def test_money_and_data_with_sources(invariant_harness: Harness) -> None:
    _run(invariant_harness, SourceBatchMachine, examples=40)
    _check_the_taps(invariant_harness)


@pytest.mark.timeout(600)
def test_money_and_data_over_retries(invariant_harness: Harness) -> None:
    _run(invariant_harness, RetriedSourceBatchMachine, examples=30)
    _check_the_taps(invariant_harness)


# --- fixed schedules: what the random ones reach too rarely ----------------------------------------------


def _machine(harness: Harness, kind: type[BatchMoneyMachine], task: Task) -> BatchMoneyMachine:
    """A machine of ``kind`` with ``task`` defined, driven by hand (its checks run after every try)."""
    bound: type[BatchMoneyMachine] = type(kind.__name__, (kind,), {"harness": harness})
    machine = bound()
    machine.define_task(task)
    return machine


def _needs_a_store(harness: Harness) -> None:
    if not harness.has_store:
        pytest.skip("a task state store (Airflow 3.3) is what this schedule is about")


SHOE_AND_MUG: Final = (("shoe.jpg", 0), ("mug.jpg", 1))
KILLED_AT_THE_FIRST_POLL: Final = Interruption("kill", "poll", 1)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("output", [True, False], ids=["output", "no-output"])
def test_a_retry_never_resends_an_answer_lost_twice(invariant_harness: Harness, output: bool) -> None:
    """``[shoe, mug]``: try 1 loses shoe's answer twice (two charges, ``maybe_charged``); the retry must
    not send shoe again (its ledger entry says "answer lost"), and reports what may have been charged."""
    if not output:
        _needs_a_store(invariant_harness)
    machine = _machine(invariant_harness, UrlBatchMachine, Task(urls=SHOE_AND_MUG, output=output))
    try:
        machine._try(TryPlan(faults=("lost answer twice",)))
        assert machine.ti_state == "up_for_retry", "try 1 was meant to fail with a retry"
        machine.run_quiet_try()
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
def test_a_resend_after_a_lost_answer_reports_maybe_charged(invariant_harness: Harness) -> None:
    """One URL whose first answer is lost: the hook's resend is answered; the result says the lost
    answer may have been charged (``maybe_charged: 1``)."""
    machine = _machine(invariant_harness, UrlBatchMachine, Task(urls=SHOE_AND_MUG[:1]))
    try:
        machine._try(TryPlan(faults=("lost answer",)))
        assert machine.ti_state == "success"
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
def test_a_resumed_try_keeps_the_ledger_it_carried(invariant_harness: Harness) -> None:
    """One URL, deferrable, no output folder, its ledger store refusing every write (or, before 3.3, no
    store at all) and its answer lost once: the resumed half has the ledger only from the XCom the
    deferral carried, and must report the job's coins and the lost answer from it."""
    machine = _machine(invariant_harness, UrlBatchMachine, Task(urls=SHOE_AND_MUG[:1], deferrable=True))
    try:
        machine._try(TryPlan(faults=("lost answer",), store_fails=True))
        assert machine.ti_state == "success"
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
def test_a_failure_after_an_unsaved_payment_is_final(invariant_harness: Harness) -> None:
    """``[shoe, mug]`` without an output folder, the task state store refusing every write, mug's job
    ending in ERROR: the try fails having paid for shoe's job that no later try can find, so its
    failure must be final (a retry would pay for shoe again)."""
    _needs_a_store(invariant_harness)
    machine = _machine(invariant_harness, UrlBatchMachine, Task(urls=SHOE_AND_MUG))
    try:
        machine._try(TryPlan(store_fails=True, job_fails=2))
        if machine.ti_state == "up_for_retry":
            machine.run_quiet_try()
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", STATUS_FAULTS)
def test_a_retry_that_cannot_read_a_status_does_not_pay_again(invariant_harness: Harness, fault: str) -> None:
    """One URL, waited for on the worker, killed at its first poll (its job saved when submitting ended):
    the retry's first status request for that job fails (an answer over the cap, a redirect); that is no
    proof HitPaw forgot the job, so the retry must not submit again."""
    task = Task(urls=SHOE_AND_MUG[:1], output=True, deferrable=False)
    machine = _machine(invariant_harness, UrlBatchMachine, task)
    try:
        machine._try(TryPlan(interruption=KILLED_AT_THE_FIRST_POLL))
        assert machine.ti_state == "up_for_retry"
        machine.retry_meets_a_failing_status(fault)
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
def test_a_kill_after_submitting_finds_the_jobs_saved(invariant_harness: Harness) -> None:
    """``[shoe, mug]`` waited for on the worker, killed at its first poll: submitting had ended, and with
    it the ledger was saved, so both jobs are recorded (and the retry waits for them)."""
    task = Task(urls=SHOE_AND_MUG, output=True, deferrable=False)
    machine = _machine(invariant_harness, UrlBatchMachine, task)
    try:
        machine._try(TryPlan(interruption=KILLED_AT_THE_FIRST_POLL))
        machine.run_quiet_try()
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
def test_an_input_given_twice_reports_a_lost_answer_once(
    invariant_harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same URL given twice, its first answer lost (the resend answered): one job, one lost answer;
    the report's ``maybe_charged``, summed over its results as its coins are, says 1."""
    monkeypatch.setattr(model, "MAYBE_CHARGED_ON_COPIES_TOLERATED", False)
    machine = _machine(invariant_harness, UrlBatchMachine, Task(urls=SHOE_AND_MUG[:1] * 2))
    try:
        machine._try(TryPlan(faults=("lost answer",)))
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
def test_a_retry_budget_counts_an_earlier_lost_answer(invariant_harness: Harness) -> None:
    """``[shoe, mug, portrait]`` with ``max_coins=60``: try 1 pays twice for shoe (its first answer lost,
    the resend answered), then an execution timeout stops it before mug; the retry starts from 40 coins
    spent (the lost answer counted at the price), so it can afford mug alone."""
    urls = (*SHOE_AND_MUG, ("portrait.png", 2))
    task = Task(urls=urls, output=True, max_coins=60)
    machine = _machine(invariant_harness, UrlBatchMachine, task)
    try:
        machine._try(TryPlan(faults=("lost answer",), interruption=Interruption("timeout", "submit", 2)))
        assert machine.ti_state == "up_for_retry"
        machine.run_quiet_try()
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
def test_a_retry_does_not_take_another_runs_pair_as_its_own(invariant_harness: Harness) -> None:
    """One URL kept by DAG run 1 (job A); DAG run 2 pays for job B and is killed at its first poll; its
    retry finds run 1's pair (its record names A): not its own, since its ledger holds B. It waits for B
    and keeps B's pair, rather than reporting A with B's coins."""
    task = Task(urls=SHOE_AND_MUG[:1], output=True, deferrable=False)
    machine = _machine(invariant_harness, UrlBatchMachine, task)
    try:
        machine.run_quiet_try()
        machine.new_dag_run()
        machine._try(TryPlan(interruption=KILLED_AT_THE_FIRST_POLL))
        assert machine.ti_state == "up_for_retry"
        machine.run_quiet_try()
    finally:
        machine.teardown()


@pytest.mark.timeout(120)
def test_a_retry_reports_what_it_paid_for_an_input_it_now_refuses(invariant_harness: Harness) -> None:
    """Sources ``[img0 late, img1, img2]`` into an output folder under ``overwrite="fail"``, with
    ``max_coins=20`` and ``max_failed=1``: try 1 pays for img1 (img0 is not there yet, the budget leaves
    img2 out) and fails; img0 appears and img1 is edited; the retry refuses img1 (its try-1 files are
    there), and must still report the 20 coins the run paid for it."""
    sources = (Source(0, 0, late=True), Source(1, 1), Source(2, 2))
    task = Task(sources=sources, output=True, overwrite="fail", max_coins=20, max_failed=1)
    machine = _machine(invariant_harness, RetriedSourceBatchMachine, task)
    try:
        machine.run_quiet_try()
        assert machine.ti_state == "up_for_retry"
        machine.edit_a_source_before_the_retry(0)  # img0 appears
        machine.edit_a_source_before_the_retry(1)  # img1 is edited
        machine.run_quiet_try()
    finally:
        machine.teardown()
