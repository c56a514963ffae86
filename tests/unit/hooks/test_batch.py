"""Many requests from a worker at once (hooks/_batch.py): every answer that arrived is recorded, on every
path, and nothing more is sent once the work is interrupted or a result says stop.

The threads are made to meet where a scenario needs them to (events, a barrier), never left to a sleep's
chance: how busy the machine is changes no result. :data:`PATIENCE` only bounds how long a broken
``call_many`` takes to fail; a passing run never waits for it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import HitPawInsufficientCoinsError
from airflow_provider_hitpaw.hooks import _batch
from airflow_provider_hitpaw.hooks._batch import call_many
from airflow_provider_hitpaw.hooks._transport import Attempts, HitPawNotSentError, retry_sync
from tests.unit.fakes import Interrupted

POLICY = _api.RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002)
#: The longest a thread here waits for another; only a broken call_many makes one wait that long.
PATIENCE = 10.0


def test_every_answer_that_arrived_is_recorded_when_the_caller_is_interrupted() -> None:
    """A SIGTERM once dropped the results of submissions already under way: paid jobs went unrecorded."""
    sent: list[int] = []
    lock = threading.Lock()
    three_sent = threading.Event()

    def call(item: int, gate: Any, stop: threading.Event) -> str:
        attempts = Attempts(POLICY, gate=gate, stop=stop)
        attempts.begin()  # where a real request starts: a stopped batch sends nothing more
        with lock:
            sent.append(item)
            if len(sent) == 3:
                three_sent.set()
        if item == 0:
            three_sent.wait(PATIENCE)  # the first answer comes once all three threads have sent
        else:
            stop.wait(PATIENCE)  # still in flight when the interruption comes; answered after it
        return f"job-{item}"

    recorded: dict[int, Any] = {}
    interrupted: list[int] = []

    def on_result(index: int, result: Any) -> None:
        recorded[index] = result
        if index == 0 and not interrupted:
            interrupted.append(index)
            raise Interrupted  # the task's time-out fires (once) while the others are in flight

    with pytest.raises(Interrupted):
        call_many(list(range(10)), call, policy=POLICY, max_in_flight=3, on_result=on_result)
    assert recorded == {item: f"job-{item}" for item in sent}, "an answer that arrived was dropped"
    # What was under way when the interruption came (3 threads, one of which may have taken the 4th item
    # before the caller heard of the 1st): nothing after it.
    assert 3 <= len(sent) <= 4, f"sent after the interruption: {sent}"
    assert {1, 2} <= set(sent)


def test_what_was_recorded_is_made_durable_while_the_other_answers_stall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record was written only when the next answer came: a long back-off on the others kept paid jobs
    out of the task state store for as long as it lasted."""
    monkeypatch.setattr(_batch, "CHECKPOINT_SECONDS", 0.01)  # that one comes is the point, not how soon
    stalled = threading.Event()
    recorded: dict[int, str] = {}
    durable_at_checkpoints: list[list[int]] = []

    def call(item: int, gate: Any, stop: threading.Event) -> str:
        if item == 1:
            stalled.wait(PATIENCE)  # a 429 back-off, a slow answer: it ends only once a checkpoint came
        return f"job-{item}"

    def checkpoint() -> None:
        durable_at_checkpoints.append(sorted(recorded))
        # The first answer brings one checkpoint with it; a second one that sees it alone came on its own.
        if durable_at_checkpoints.count([0]) == 2:
            stalled.set()

    call_many(
        [0, 1],
        call,
        policy=POLICY,
        max_in_flight=2,
        on_result=lambda index, result: recorded.setdefault(index, result),
        checkpoint=checkpoint,
    )
    assert stalled.is_set(), "no checkpoint while the second answer stalled"
    assert durable_at_checkpoints[-1] == [0, 1]


def test_an_interruption_makes_the_answers_in_durable_before_waiting_for_the_rest() -> None:
    """Airflow kills a task seconds after asking it to stop: the answers already in cannot wait for those
    still under way (which may take longer than that) to be recorded."""
    finished: list[int] = []
    slow_started = threading.Event()
    interrupted = threading.Event()
    durable_after_interruption = threading.Event()

    def call(item: int, gate: Any, stop: threading.Event) -> str:
        if item == 2:
            slow_started.set()
            # Under way when the interruption comes, and answers only once what was in is durable.
            durable_after_interruption.wait(PATIENCE)
            finished.append(item)
        else:
            slow_started.wait(PATIENCE)  # the other two answer once the slow one is under way
        return f"job-{item}"

    recorded: list[int] = []
    seen_by_checkpoints: list[tuple[list[int], list[int]]] = []

    def on_result(index: int, result: Any) -> None:
        recorded.append(index)
        if len(recorded) == 2:
            interrupted.set()
            raise Interrupted  # SIGTERM, with the third request in flight

    def checkpoint() -> None:
        seen_by_checkpoints.append((sorted(set(recorded)), list(finished)))
        if interrupted.is_set():
            durable_after_interruption.set()

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
            if item == 1:
                stop.wait(PATIENCE)  # in flight when "no coins" comes: the other thread sends item 2
            if item == 2:
                raise HitPawInsufficientCoinsError("The coins are not enough", code=110402000)
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
    assert sorted(sent) == [0, 1, 2], f"{len(sent)} requests: the batch went on after 'no coins'"
    assert results[:2] == ["job-0", "job-1"]
    assert all(isinstance(r, HitPawNotSentError) for r in results[3:])


def test_a_failing_recorder_does_not_hide_the_other_records() -> None:
    recorded: list[int] = []
    called: list[int] = []
    all_under_way = threading.Barrier(4, timeout=PATIENCE)

    def call(item: int, gate: Any, stop: threading.Event) -> int:
        called.append(item)
        all_under_way.wait()  # the four answer together: all are sent when the first recording fails
        return item

    def on_result(index: int, result: Any) -> None:
        recorded.append(index)
        if len(recorded) == 1:
            raise RuntimeError("the store is down")

    with pytest.raises(RuntimeError):
        call_many(list(range(4)), call, policy=POLICY, max_in_flight=4, on_result=on_result)
    assert sorted(called) == [0, 1, 2, 3]
    # Whatever was sent is recorded, the failing one included (once more: recording twice is harmless).
    assert sorted(set(recorded)) == sorted(called)
