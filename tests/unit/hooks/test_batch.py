"""Many requests from a worker at once (hooks/_batch.py): every answer that arrived is recorded, on every
path, and nothing more is sent once the work is interrupted or a result says stop."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import HitPawError, HitPawInsufficientCoinsError
from airflow_provider_hitpaw.hooks._batch import call_many
from airflow_provider_hitpaw.hooks._transport import Attempts, HitPawNotSentError, retry_sync
from tests.unit.fakes import Interrupted

POLICY = _api.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)


def test_every_answer_that_arrived_is_recorded_when_the_caller_is_interrupted() -> None:
    """A SIGTERM once dropped the results of submissions already under way: paid jobs went unrecorded."""
    release = threading.Event()
    sent: list[int] = []

    def call(item: int, gate: Any, stop: threading.Event) -> str:
        attempts = Attempts(POLICY, gate=gate, stop=stop)
        attempts.begin()  # where a real request starts: a stopped batch sends nothing more
        sent.append(item)
        if item > 0:
            release.wait(5)  # still in flight when the interruption comes
        return f"job-{item}"

    recorded: dict[int, Any] = {}

    def on_result(index: int, result: Any) -> None:
        recorded[index] = result
        if index == 0 and not release.is_set() and not interrupted:
            interrupted.append(index)
            threading.Timer(0.2, release.set).start()
            raise Interrupted  # the task's time-out fires (once) while the others are in flight

    interrupted: list[int] = []

    with pytest.raises(Interrupted):
        call_many(list(range(10)), call, policy=POLICY, max_in_flight=3, on_result=on_result)
    assert recorded == {item: f"job-{item}" for item in sent}, "an answer that arrived was dropped"
    # What was under way when the interruption came (3 threads, one of which may have taken the 4th item
    # before the caller heard of the 1st): nothing after it.
    assert 3 <= len(sent) <= 4, f"sent after the interruption: {sent}"


def test_what_was_recorded_is_made_durable_while_the_other_answers_stall() -> None:
    """A record was written only when the next answer came: a long back-off on the others kept paid jobs
    out of the task state store for as long as it lasted."""
    stalled = threading.Event()
    recorded: dict[int, float] = {}
    durable_at_checkpoints: list[list[int]] = []

    def call(item: int, gate: Any, stop: threading.Event) -> str:
        if item == 1:
            stalled.wait(5)  # a 429 back-off, a slow answer
        return f"job-{item}"

    def checkpoint() -> None:
        durable_at_checkpoints.append(sorted(recorded))
        if list(recorded) == [0] and time.monotonic() - recorded[0] >= 0.3:
            stalled.set()  # a checkpoint came on its own, well after the first answer, the second stalled

    call_many(
        [0, 1],
        call,
        policy=POLICY,
        max_in_flight=2,
        on_result=lambda index, result: recorded.setdefault(index, time.monotonic()),
        checkpoint=checkpoint,
    )
    assert stalled.is_set(), "no checkpoint while the second answer stalled"
    assert durable_at_checkpoints[-1] == [0, 1]


def test_an_interruption_makes_the_answers_in_durable_before_waiting_for_the_rest() -> None:
    """Airflow kills a task seconds after asking it to stop: the answers already in cannot wait for those
    still under way (which may take longer than that) to be recorded."""
    finished: list[int] = []
    slow_done = threading.Event()

    def call(item: int, gate: Any, stop: threading.Event) -> str:
        if item == 2:
            slow_done.wait(1.0)  # under way when the interruption comes, and slow to answer
            finished.append(item)
        return f"job-{item}"

    recorded: list[int] = []
    seen_by_checkpoints: list[tuple[list[int], list[int]]] = []

    def on_result(index: int, result: Any) -> None:
        recorded.append(index)
        if len(recorded) == 2:
            raise Interrupted  # SIGTERM, with the third request in flight

    def checkpoint() -> None:
        seen_by_checkpoints.append((sorted(set(recorded)), list(finished)))

    with pytest.raises(Interrupted):
        call_many([0, 1, 2], call, policy=POLICY, max_in_flight=3, on_result=on_result, checkpoint=checkpoint)
    assert ([0, 1], []) in seen_by_checkpoints, f"recorded only after the slow one: {seen_by_checkpoints}"
    assert sorted(set(recorded)) == [0, 1, 2], "the answer that came after the interruption was dropped"
    # The answer whose recording was interrupted is recorded again: it may not have been.
    assert recorded.count(recorded[1]) == 2


def test_a_stop_result_ends_the_batch_and_the_rest_are_not_sent() -> None:
    sent: list[int] = []
    lock = threading.Lock()

    def call(item: int, gate: Any, stop: threading.Event) -> str:
        def attempt() -> str:
            with lock:
                sent.append(item)
            if item == 2:
                raise HitPawInsufficientCoinsError("The coins are not enough", code=110402000)
            time.sleep(0.01)
            return f"job-{item}"

        return retry_sync(attempt, Attempts(POLICY, gate=gate, stop=stop))

    results = call_many(
        list(range(20)),
        call,
        policy=POLICY,
        max_in_flight=2,
        stop_on=lambda result: isinstance(result, HitPawInsufficientCoinsError),
    )
    assert isinstance(results[2], HitPawInsufficientCoinsError)
    not_sent = [r for r in results if isinstance(r, HitPawNotSentError)]
    assert len(sent) <= 4, f"{len(sent)} requests: the batch went on after 'no coins'"
    assert len(not_sent) >= 16
    assert all(isinstance(r, str | HitPawError) for r in results)


def test_a_failing_recorder_does_not_hide_the_other_records() -> None:
    recorded: list[int] = []
    called: list[int] = []

    def call(item: int, gate: Any, stop: threading.Event) -> int:
        called.append(item)
        time.sleep(0.05)
        return item

    def on_result(index: int, result: Any) -> None:
        recorded.append(index)
        if len(recorded) == 1:
            raise RuntimeError("the store is down")

    with pytest.raises(RuntimeError):
        call_many(list(range(4)), call, policy=POLICY, max_in_flight=4, on_result=on_result)
    assert len(called) > 1
    # Whatever was sent is recorded, the failing one included (once more: recording twice is harmless).
    assert sorted(set(recorded)) == sorted(called)
