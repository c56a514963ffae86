"""The fault matrix, written once: what the emulator does wrong, and what the provider must make of it.

Used by ``tests/integration/test_fault_matrix.py`` (which asserts every expectation) and by
``benchmarks/faults.py`` (which prints the table). Each scenario is run through the provider's real
components against a real emulator:

* ``operator``: ``SegmentImageOperator(deferrable=False).execute(context)``, waiting in this thread with
  :class:`~airflow_provider_hitpaw.hooks.hitpaw.HitPawHook`;
* ``deferred``: ``SegmentImageOperator(deferrable=True).execute(context)`` raises ``TaskDeferred``; the
  trigger it carries (:class:`~airflow_provider_hitpaw.triggers.hitpaw.SegmentationTrigger`, polling with
  :class:`~airflow_provider_hitpaw.hooks.hitpaw.HitPawAsyncHook`) is run to its end, and its event is fed
  to ``execute_complete``.

Only waiting is shortened: the hooks' back-off pauses (``_pause``/``_pause_async``) are recorded and slept
for at most :data:`PAUSE_CAP` seconds, and the hooks use the production :class:`RetryPolicy` numbers (so
the recorded delays are the real back-off), with a recorder around :meth:`RetryPolicy.delay`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol
from unittest import mock

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import HitPawError, HitPawSubmissionUnknownError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

Path = Literal["operator", "deferred"]
PATHS: tuple[Path, ...] = ("operator", "deferred")
#: Each path submits its own image, so that "one job per image" tells the paths apart.
IMAGE_FOR_PATH: Mapping[Path, str] = {"operator": "shoe.jpg", "deferred": "portrait.png"}
SUBMIT = _api.SUBMIT_PATH
STATUS = _api.TASK_STATUS_PATH
#: Longest real sleep of a back-off pause (the delay asked for is recorded in full).
PAUSE_CAP = 0.02
POLL_INTERVAL = 0.05
TASK_TIMEOUT = 90.0


class Emulator(Protocol):
    """What the runner needs of an emulator: ``EmulatorServer`` and the fixture's handle both fit."""

    @property
    def api_key(self) -> str: ...

    def sample_url(self, name: str = ...) -> str: ...

    def state(self) -> dict[str, Any]: ...

    def reset(self) -> None: ...

    def set_faults(self, rules: Any, seed: int | None = None) -> None: ...

    def set_key(self, key: str, state: str = ...) -> None: ...

    def configure(self, *, coins: int | None = None) -> None: ...

    def down(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class FaultScenario:
    """One row of the matrix.

    :param faults: emulator fault rules (``--fault`` syntax), active from the start.
    :param kind: ``transient`` (the task must complete), ``permanent`` (it must fail without retries),
        or ``lost``: a submission's answer lost twice, after which HitPaw may have charged for the image:
        the task must fail without retries and without a third submission.
    :param key_state: what the connection's key becomes (``invalid``, ``expired``, ``no_access``) ...
    :param key_change: ... before the submission, or right after it (so that polls meet it).
    :param outage_seconds: the emulator refuses connections this long, starting right after submission.
    :param read_timeout: the hooks' read time-out, to make ``slow`` answers time out.
    :param retry_after: the ``Retry-After`` the 429 faults send: every recorded delay must honour it.
    :param code / message: HitPaw's code and message the permanent failure must carry.
    :param refused_field: for input refused before sending, the field the failure must name.
    """

    name: str
    kind: Literal["transient", "permanent", "lost"]
    faults: tuple[str, ...] = ()
    description: str = ""
    key_state: str | None = None
    key_change: Literal["before_submit", "after_submit"] = "before_submit"
    coins: int | None = None
    file_url: str | None = None
    outage_seconds: float | None = None
    read_timeout: float | None = None
    retry_after: float | None = None
    code: int | None = None
    message: str | None = None
    refused_field: str | None = None

    @property
    def fault_text(self) -> str:
        """The set-up in a few words, for the benchmark's table."""
        parts = [_short(spec) for spec in self.faults]
        if self.outage_seconds:
            parts.append(f"down {self.outage_seconds:g} s after submit")
        if self.key_state:
            parts.append(f"key {self.key_state} {self.key_change.replace('_', ' ')}")
        if self.coins is not None:
            parts.append(f"coins={self.coins}")
        if self.file_url:
            parts.append(f"file_url={self.file_url}")
        if self.read_timeout:
            parts.append(f"read_timeout={self.read_timeout:g}")
        return "; ".join(parts)

    @property
    def expected(self) -> str:
        """The outcome every path must show, in :attr:`Observation.outcome`'s words."""
        if self.kind == "transient":
            return "completed"
        if self.kind == "lost":
            return "AirflowFailException (HitPawSubmissionUnknownError)"
        if self.refused_field is not None:
            return f"AirflowFailException ({self.refused_field}, nothing sent)"
        return f"AirflowFailException (code {self.code})"

    @property
    def fails_at_submission(self) -> bool:
        if self.kind == "lost":
            return True
        return self.kind == "permanent" and (self.key_change == "before_submit" or self.key_state is None)

    def fault_counts(self) -> Counter[str]:
        """How many faults of each kind the rules serve when they are all used up (``first_n``)."""
        counts: Counter[str] = Counter()
        for spec in self.faults:
            kind, _, params = spec.partition(":")
            first_n = dict(p.split("=", 1) for p in params.split(",") if "=" in p).get("first_n")
            if first_n is not None:
                counts[kind] += int(first_n)
        return counts

    def path_groups(self) -> list[tuple[Path, ...]]:
        """The paths run together: an outage is sat through once by both paths at the same time."""
        if self.outage_seconds:
            return [PATHS]
        return [(path,) for path in PATHS]


def _short(spec: str) -> str:
    """``500:first_n=2,paths=/api/task-status`` as ``500 x2 status``."""
    kind, _, raw = spec.partition(":")
    params = dict(p.split("=", 1) for p in raw.split(",") if "=" in p)
    where = {SUBMIT: "submit", STATUS: "status"}.get(params.pop("paths", ""), "all")
    count = f" x{params.pop('first_n')}" if "first_n" in params else ""
    extra = "".join(f" {key}={value}" for key, value in params.items())
    return f"{kind}{count} {where}{extra}"


def _both(kind: str, n: int, extra: str = "", *, on_submit: int | None = None) -> tuple[str, ...]:
    """``on_submit`` (default ``n``) faults on the submission and ``n`` on the status polls.

    A fault that loses a submission's answer after the request left (a dropped connection, a garbled or
    gateway answer) may hide a job HitPaw created: the hook sends such a submission once more only, so
    those scenarios lose one submission answer, not two (two is the ``lost`` scenario).
    """
    suffix = f",{extra}" if extra else ""
    submit = n if on_submit is None else on_submit
    return (f"{kind}:first_n={submit},paths={SUBMIT}{suffix}", f"{kind}:first_n={n},paths={STATUS}{suffix}")


SCENARIOS: list[FaultScenario] = [
    FaultScenario("500 x2 / x2", "transient", _both("500", 2), "HTTP 500, code 100500000"),
    FaultScenario(
        "500 x7 on polls",
        "transient",
        (f"500:first_n=7,paths={STATUS}",),
        "outlasts one call's 5 attempts: the wait polls on",
    ),
    FaultScenario("429 x3 / x3", "transient", _both("429", 3), "no Retry-After: exponential back-off"),
    FaultScenario(
        "429 Retry-After",
        "transient",
        _both("429", 2, "retry_after=2"),
        "Retry-After: 2 is a floor for every delay",
        retry_after=2.0,
    ),
    FaultScenario("drop x1 / x2", "transient", _both("drop", 2, on_submit=1), "connection closed, no answer"),
    FaultScenario(
        "outage 20 s",
        "transient",
        description="connection refused for 20 s while waiting",
        outage_seconds=20.0,
    ),
    FaultScenario(
        "read time-out",
        "transient",
        (f"slow:first_n=2,delay_s=1.5,paths={STATUS}",),
        "status answers later than the read time-out",
        read_timeout=0.3,
    ),
    FaultScenario("non-JSON x1 / x2", "transient", _both("non_json", 2, on_submit=1), "HTTP 200 'not json'"),
    FaultScenario(
        "503 HTML x1 / x2", "transient", _both("503_html", 2, on_submit=1), "a gateway's HTML error page"
    ),
    FaultScenario(
        "truncated x1 / x2", "transient", _both("truncated_json", 2, on_submit=1), "JSON cut in the middle"
    ),
    FaultScenario(
        "code under 200", "transient", _both("code_under_200", 2), "HTTP 200 carrying code 100500000"
    ),
    FaultScenario(
        "unknown status x3",
        "transient",
        (f"unknown_status:first_n=3,paths={STATUS}",),
        "status PAUSED: not an end, not an error",
    ),
    FaultScenario(
        "missing fields", "transient", _both("missing_fields", 2, on_submit=1), "code 200, empty data"
    ),
    FaultScenario(
        "answer lost twice",
        "lost",
        (f"drop:first_n=2,paths={SUBMIT}",),
        "two dropped answers to one submission: it may have been charged, so no third",
    ),
    FaultScenario(
        "wrong key",
        "permanent",
        description="key unknown at submission",
        key_state="invalid",
        code=110400000,
        message="api_key is not valid",
    ),
    FaultScenario(
        "key revoked while waiting",
        "permanent",
        description="the key stops being valid after submission",
        key_state="invalid",
        key_change="after_submit",
        code=110400000,
        message="api_key is not valid",
    ),
    FaultScenario(
        "expired key while waiting",
        "permanent",
        description="the key expires after submission",
        key_state="expired",
        key_change="after_submit",
        code=100401000,
        message="Token is expired",
    ),
    FaultScenario(
        "no access",
        "permanent",
        description="key may not use this API",
        key_state="no_access",
        code=100400000,
        message="No access",
    ),
    FaultScenario(
        "no coins",
        "permanent",
        description="19 coins left, a job costs 20",
        coins=19,
        code=110402000,
        message="The coins are not enough",
    ),
    FaultScenario(
        "invalid URL",
        "permanent",
        description="refused by the provider before sending",
        file_url="ftp://127.0.0.1/shoe.jpg",
        refused_field="file_url",
    ),
]


@dataclass(frozen=True)
class RetryRecord:
    error: str
    attempt: int
    delay: float
    retry_after: float | None


@dataclass(frozen=True)
class RecordingRetryPolicy(_api.RetryPolicy):
    """The production policy, writing down every delay it hands out."""

    records: list[RetryRecord] = field(default_factory=list, compare=False, repr=False)

    def delay(self, error: HitPawError, attempt: int) -> float:
        chosen = super().delay(error, attempt)
        self.records.append(
            RetryRecord(type(error).__name__, attempt, chosen, getattr(error, "retry_after", None))
        )
        return chosen


@dataclass
class PathResult:
    path: Path
    file_url: str
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    #: None when no trigger ran (the task failed before deferring, or waited in process).
    events: list[dict[str, Any]] | None = None
    deferred: bool = False
    seconds: float = 0.0

    @property
    def cause(self) -> BaseException | None:
        return self.error.__cause__ if self.error is not None else None

    @property
    def outcome(self) -> str:
        if self.error is None:
            status = (self.result or {}).get("status")
            return "completed" if status == "COMPLETED" else f"returned status {status!r}"
        cause = self.cause
        if isinstance(cause, HitPawError) and cause.code is not None:
            return f"{type(self.error).__name__} (code {cause.code})"
        if isinstance(cause, HitPawSubmissionUnknownError):
            return f"{type(self.error).__name__} ({type(cause).__name__})"
        field_name = getattr(cause, "field", None)
        if field_name is not None:
            return f"{type(self.error).__name__} ({field_name}, nothing sent)"
        return f"{type(self.error).__name__}: {self.error}"


@dataclass
class Observation:
    """What one run of a scenario did, on the provider's side and on the emulator's."""

    scenario: FaultScenario
    paths: dict[Path, PathResult]
    state: dict[str, Any]
    retries: list[RetryRecord]
    pauses: list[float]
    seconds: float
    policy: _api.RetryPolicy

    @property
    def requests(self) -> int:
        return sum(n for path, n in self.state["requests"].items() if path.startswith("/api/"))

    def requests_to(self, path: str) -> int:
        return int(self.state["requests"].get(path, 0))

    @property
    def jobs_per_image(self) -> Counter[str]:
        return Counter(job["file_url"] for job in self.state["jobs"])

    @property
    def events(self) -> int:
        return sum(len(r.events) for r in self.paths.values() if r.events is not None)


def run_scenario(
    emulator: Emulator,
    scenario: FaultScenario,
    paths: Sequence[Path],
    *,
    conn_id: str = "hitpaw_default",
) -> Observation:
    """Reset the emulator, set the scenario up, run ``paths`` at the same time, and observe."""
    from airflow_provider_hitpaw import validation
    from airflow_provider_hitpaw.hooks import _transport
    from airflow_provider_hitpaw.hooks import hitpaw as hooks
    from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
    from airflow_provider_hitpaw.triggers.hitpaw import SegmentationTrigger

    emulator.reset()
    if scenario.coins is not None:
        emulator.configure(coins=scenario.coins)
    if scenario.key_state and scenario.key_change == "before_submit":
        emulator.set_key(emulator.api_key, scenario.key_state)
    emulator.set_faults(list(scenario.faults))

    policy = RecordingRetryPolicy()
    pauses: list[float] = []
    lock = threading.Lock()

    def pause(seconds: float) -> None:
        with lock:
            pauses.append(seconds)
        time.sleep(min(seconds, PAUSE_CAP))

    async def pause_async(seconds: float) -> None:
        with lock:
            pauses.append(seconds)
        await asyncio.sleep(min(seconds, PAUSE_CAP))

    def tuned(make: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """The component's own hook factory, with the recording policy and the scenario's time-out."""

        def factory(component: Any) -> Any:
            hook = make(component)
            hook.retry_policy = policy
            if scenario.read_timeout is not None:
                hook.read_timeout = scenario.read_timeout
            return hook

        return factory

    def after_submit() -> None:
        if scenario.key_state and scenario.key_change == "after_submit":
            emulator.set_key(emulator.api_key, scenario.key_state)
        if scenario.outage_seconds:
            emulator.down(scenario.outage_seconds)

    # Every path submits, then all meet here; the last to arrive changes the world for all of them.
    barrier = threading.Barrier(len(paths), action=after_submit)
    original_submit = hooks.HitPawHook.submit_segmentation

    def submit(hook: Any, file_url: str) -> Any:
        job = original_submit(hook, file_url)
        barrier.wait(timeout=60)
        return job

    with ExitStack() as stack:
        # Polls far faster than users may poll: each scenario is about faults, not cadence.
        stack.enter_context(mock.patch.object(validation, "MIN_POLL_INTERVAL", POLL_INTERVAL))
        stack.enter_context(mock.patch.object(_transport, "_pause", pause))
        stack.enter_context(mock.patch.object(_transport, "_pause_async", pause_async))
        stack.enter_context(
            mock.patch.object(SegmentImageOperator, "_hook", tuned(SegmentImageOperator._hook))
        )
        stack.enter_context(
            mock.patch.object(SegmentationTrigger, "_make_hook", tuned(SegmentationTrigger._make_hook))
        )
        stack.enter_context(mock.patch.object(hooks.HitPawHook, "submit_segmentation", submit))
        started = time.monotonic()
        results: dict[Path, PathResult] = {}
        if len(paths) == 1:
            # In this thread: Airflow 2.11's operators only run from the thread that built them.
            _run_path(paths[0], scenario, emulator, conn_id, results, barrier)
        threads = (
            []
            if len(paths) == 1
            else [
                threading.Thread(
                    target=_run_path,
                    args=(path, scenario, emulator, conn_id, results, barrier),
                    name=f"fault-{path}",
                )
                for path in paths
            ]
        )
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TASK_TIMEOUT + 30)
        seconds = time.monotonic() - started
    return Observation(
        scenario=scenario,
        paths=results,
        state=emulator.state(),
        retries=list(policy.records),
        pauses=list(pauses),
        seconds=seconds,
        policy=policy,
    )


def _run_path(
    path: Path,
    scenario: FaultScenario,
    emulator: Emulator,
    conn_id: str,
    results: dict[Path, PathResult],
    barrier: threading.Barrier,
) -> None:
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_hitpaw.operators.hitpaw import SegmentImageOperator
    from tests.conftest import FakeStateStore, task_context

    file_url = scenario.file_url or emulator.sample_url(IMAGE_FOR_PATH[path])
    outcome = PathResult(path=path, file_url=file_url)
    results[path] = outcome
    started = time.monotonic()
    operator = SegmentImageOperator(
        task_id=f"segment_{path}",
        file_url=file_url,
        hitpaw_conn_id=conn_id,
        deferrable=path == "deferred",
        poll_interval=POLL_INTERVAL,
        timeout=TASK_TIMEOUT,
    )
    context: Any = task_context(started_at=time.time(), store=FakeStateStore())
    try:
        try:
            outcome.result = operator.execute(context)
        except TaskDeferred as deferred:
            outcome.deferred = True
            payloads = asyncio.run(_events(deferred.trigger))
            outcome.events = payloads
            outcome.result = operator.execute_complete(
                context, event=payloads[0] if payloads else None, **(deferred.kwargs or {})
            )
    except Exception as err:
        outcome.error = err
        # A path that failed before submitting must not leave the others waiting at the barrier.
        barrier.abort()
    finally:
        outcome.seconds = time.monotonic() - started


async def _events(trigger: Any) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]
