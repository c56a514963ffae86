"""The harness the stateful invariant tests drive the batch operator through: fast back-off, a tap on
what reached the client, kills and interruptions at a chosen call, a task state store that can fail or
die with its worker, and every log line the operator wrote.

A *kill* stands for a SIGKILL of the worker (the OOM killer, a lost node): the exception ends the try and,
from that instant, nothing that try still does counts: no write to the task state store, no XCom, no
file in the output folder, no further request to HitPaw, no report. Python's ``except``/``finally``
blocks still run in the test, so the store and the task instance below ignore what they are asked once
the kill happened, the output folder is put back as it was at that instant, and the requests already
under way are waited for (HitPaw may have charged for them, as it may under a real kill).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FakeStateStore, FakeTaskInstance


class WorkerKilled(BaseException):
    """The worker of the try was killed (SIGKILL): raised at a chosen call, nothing after it counts."""


class ExecutionTimeout(Exception):
    """Airflow's ``execution_timeout`` interrupting the try at a chosen call (the try may still clean up)."""


@dataclass(frozen=True)
class Interruption:
    """Where the next try is interrupted: ``kind`` (``kill`` or ``timeout``) at the ``nth`` call of ``at``
    (``submit``, ``poll``: a request to HitPaw from the worker; ``keep``: writing a pair). A timeout comes
    before the call (an execution timeout arrives while the worker is about to send or write); a kill at a
    submission or a pair comes after it (HitPaw charged, the pair landed: the worker dies before it could
    record either), at a poll before it."""

    kind: str
    at: str
    nth: int

    def __str__(self) -> str:
        return f"{self.kind} at {self.at} #{self.nth}"


@dataclass
class Harness:
    """What one test function shares with its state machine's examples."""

    emulator: Any
    root: Path
    has_store: bool
    read_logs: Callable[[], str]
    #: Every job id that reached the client in a submission's answer.
    delivered: set[str] = field(default_factory=set)
    #: The try's submissions as they went out, one per attempt: the ``file_url`` sent, the job id its
    #: answer carried (None: no answer reached the client, or one without a job id), and whether the
    #: answer carried one of HitPaw's error codes (which the hook takes as proof that nothing was done).
    attempts: list[tuple[str, str | None, bool]] = field(default_factory=list)
    interruption: Interruption | None = None
    keep_fails: bool = False
    #: The submission of the try whose job HitPaw is to end in ERROR (its image, say, was unreadable).
    fail_nth: int | None = None
    dead: bool = False
    calls: dict[str, int] = field(default_factory=dict)
    examples: int = 0
    #: What each tap saw over the whole test (``answers``, ``submit``, ``poll``, ``keep``): a tap that never
    #: fires means the package no longer goes through it, and the faults it injects are silently off.
    seen: dict[str, int] = field(default_factory=dict)
    #: The try's output folder, and what it held at the instant of a kill: a killed worker writes
    #: nothing more there either (:meth:`undo_after_kill` puts it back as it was).
    output: Path | None = None
    at_kill: dict[str, bytes] | None = None
    #: Requests to HitPaw under way from the worker (a killed try's threads may still be finishing one).
    in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _idle: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self._idle = threading.Condition(self._lock)

    def arm(
        self, interruption: Interruption | None, keep_fails: bool, output: Path | None, fail_nth: int | None
    ) -> None:
        with self._lock:
            self.interruption, self.keep_fails, self.dead, self.calls = interruption, keep_fails, False, {}
            self.attempts = []
            self.output, self.at_kill, self.fail_nth = output, None, fail_nth

    def disarm(self) -> None:
        with self._lock:
            self.interruption, self.keep_fails, self.fail_nth = None, False, None

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until no request of the worker is under way: what HitPaw made, it made before the books are
        read (a real kill would have cut them; here the worker's threads finish what they started)."""
        with self._idle:
            if not self._idle.wait_for(lambda: self.in_flight == 0, timeout=timeout):
                raise AssertionError(f"{self.in_flight} requests of the worker still under way")

    def sending(self) -> None:
        """A request of the worker starts; a dead worker sends nothing more."""
        with self._lock:
            if self.dead:
                raise WorkerKilled("the worker was killed: nothing more is sent")
            self.in_flight += 1

    def sent(self) -> None:
        with self._idle:
            self.in_flight -= 1
            self._idle.notify_all()

    def reached(self, at: str) -> BaseException | None:
        """Count a call at ``at``; the exception that interrupts the try there, if it is the one."""
        with self._lock:
            self.calls[at] = self.calls.get(at, 0) + 1
            self.seen[at] = self.seen.get(at, 0) + 1
            plan = self.interruption
            if self.dead or plan is None or plan.at != at or plan.nth != self.calls[at]:
                return None
            if plan.kind == "kill":
                return WorkerKilled(str(plan))
            return ExecutionTimeout(f"Timeout: {plan}")

    def strike(self, stop: BaseException) -> BaseException:
        """The interruption happens now: from this instant a killed worker does nothing more."""
        if isinstance(stop, WorkerKilled):
            with self._lock:
                self.dead = True
                self.at_kill = _files_under(self.output)
        return stop

    def undo_after_kill(self) -> None:
        """Put the output folder back as it was when the worker was killed (what the try's threads
        wrote after that instant, a SIGKILL would have stopped)."""
        if self.at_kill is None or self.output is None:
            return
        now = _files_under(self.output)
        for name in set(now) - set(self.at_kill):
            (self.output / name).unlink()
        for name, data in self.at_kill.items():
            if now.get(name) != data:
                (self.output / name).parent.mkdir(parents=True, exist_ok=True)
                (self.output / name).write_bytes(data)


def _files_under(root: Path | None) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) by its relative path, with its bytes."""
    if root is None or not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class ModelStateStore(FakeStateStore):
    """Airflow 3.3's task state store, whose writes can fail (its API server down), and which hears
    nothing from a worker after its kill."""

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness
        self.writes_fail = False

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        if self.harness.dead:
            return  # the worker is gone: this write never happened
        if self.writes_fail:
            raise RuntimeError("API server answered 503")
        super().set(key, value, **kwargs)


class ModelTaskInstance(FakeTaskInstance):
    """A task instance whose XCom hears nothing from a killed worker."""

    def __init__(self, harness: Harness, try_number: int, max_tries: int, run_id: str) -> None:
        super().__init__(None, max_tries, try_number)
        self.harness = harness
        self.dag_id, self.run_id = "dag", run_id

    def xcom_push(self, key: str, value: Any) -> None:
        if not self.harness.dead:
            super().xcom_push(key, value)


def _install(monkeypatch: pytest.MonkeyPatch, harness: Harness) -> None:
    from airflow_provider_hitpaw import _api, storage
    from airflow_provider_hitpaw.hooks import _transport
    from airflow_provider_hitpaw.hooks import hitpaw as hooks

    real_init = hooks._HitPawHookBase.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        # Back-off in hundredths of seconds: a storm costs a moment, not minutes.
        kwargs.setdefault("retry_policy", _api.RetryPolicy(base_delay=0.01, max_delay=0.04))
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(hooks._HitPawHookBase, "__init__", init)

    real_post = _transport.post_json_sync

    def post(session: Any, url: str, body: Any, **kwargs: Any) -> Any:
        if not url.endswith(_api.SUBMIT_PATH):
            return real_post(session, url, body, **kwargs)
        sent = str(body.get("file_url")) if isinstance(body, dict) else ""
        job_id: str | None = None
        coded = False
        try:
            answer = real_post(session, url, body, **kwargs)
            try:
                parsed = json.loads(answer.body)
                data = parsed.get("data") or {}
                coded = isinstance(parsed.get("code"), int) and parsed["code"] != 200
            except (ValueError, AttributeError):
                data = {}
            if isinstance(data, dict) and isinstance(data.get("job_id"), str):
                job_id = data["job_id"]
                with harness._lock:
                    harness.delivered.add(job_id)
                    harness.seen["answers"] = harness.seen.get("answers", 0) + 1
            return answer
        finally:
            with harness._lock:
                harness.attempts.append((sent, job_id, coded))

    monkeypatch.setattr(_transport, "post_json_sync", post)

    real_call = hooks.HitPawHook._call

    def call(self: Any, request: Any, parse: Any, attempts: Any) -> Any:
        path = getattr(request, "path", "")
        at = {_api.TASK_STATUS_PATH: "poll", _api.SUBMIT_PATH: "submit"}.get(path)
        stop = harness.reached(at) if at is not None else None
        if stop is not None and (isinstance(stop, ExecutionTimeout) or at == "poll"):
            raise harness.strike(stop)  # before the request leaves
        harness.sending()
        try:
            result = real_call(self, request, parse, attempts)
        finally:
            harness.sent()
        if at == "submit" and harness.fail_nth == harness.calls.get("submit"):
            harness.emulator.fail_job(str(getattr(result, "job_id", "")))
        if stop is not None:
            # HitPaw answered (and charged); the worker dies before it can record the job.
            raise harness.strike(stop)
        return result

    monkeypatch.setattr(hooks.HitPawHook, "_call", call)

    real_persist = storage.persist_job_results

    def persist(*args: Any, **kwargs: Any) -> Any:
        if harness.dead:
            raise WorkerKilled("the worker was killed: nothing more is kept")
        if harness.keep_fails:
            raise PermissionError(13, "Permission denied", "the output folder")
        stop = harness.reached("keep")
        if isinstance(stop, ExecutionTimeout):
            raise harness.strike(stop)  # before the pair is written
        result = real_persist(*args, **kwargs)
        if stop is not None:
            # The pair and its record are written; the worker dies before it can say so.
            raise harness.strike(stop)
        return result

    monkeypatch.setattr(storage, "persist_job_results", persist)


@pytest.fixture
def invariant_harness(
    hitpaw_emulator: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> Harness:
    """The harness, with its instrumentation installed for the test (monkeypatch undoes it after)."""
    caplog.set_level(logging.DEBUG)

    def read_logs() -> str:
        # Airflow 3 logs a task through structlog to the process's output, Airflow 2 through logging.
        out, err = capfd.readouterr()
        text = caplog.text
        caplog.clear()
        return "\n".join([text, out, err])

    harness = Harness(
        emulator=hitpaw_emulator,
        root=tmp_path,
        has_store=_has_task_state_store(),
        read_logs=read_logs,
    )
    _install(monkeypatch, harness)
    return harness


def _has_task_state_store() -> bool:
    """Whether this Airflow keeps a task state store across tries (3.3 and later)."""
    from airflow import __version__

    major, minor = (int(part) for part in __version__.split(".")[:2])
    return (major, minor) >= (3, 3)
