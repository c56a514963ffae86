"""Many requests at once from a worker: a bounded thread pool that shares one rate-limit back-off, and that
records every answer that arrived, also when the work is interrupted.

Used by :meth:`HitPawHook.submit_segmentations` and :meth:`HitPawHook.get_task_statuses`.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Final, TypeVar

from airflow_provider_hitpaw.exceptions import HitPawError
from airflow_provider_hitpaw.hooks import _transport

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow_provider_hitpaw import _api
    from airflow_provider_hitpaw._budget import CoinBudget

T = TypeVar("T")
Item = TypeVar("Item")

log = logging.getLogger(__name__)


class SharedRateLimitGate:
    """One back-off shared by the threads of a batch: a 429 to any of them pauses them all.

    Consecutive 429s lengthen the pause as the retry policy says; an answer that gets through resets it.
    """

    def __init__(self, policy: _api.RetryPolicy, stop: threading.Event | None = None) -> None:
        self._policy = policy
        self._stop = stop
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self._strikes = 0
        self.holds = 0

    def wait(self, deadline: float | None) -> None:
        while True:
            with self._lock:
                delay = self._resume_at - time.monotonic()
            if deadline is not None:
                delay = min(delay, deadline - time.monotonic())
            if delay <= 0 or (self._stop is not None and self._stop.is_set()):
                return
            _transport._pause(min(delay, 1.0))

    def hold(self, error: HitPawError) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._resume_at:
                return  # another thread already paused the batch for this burst
            self._strikes += 1
            self.holds += 1
            delay = self._policy.delay(error, self._strikes)
            self._resume_at = now + delay
        log.warning("HitPaw is rate limiting (%s); the whole batch pauses %.1f s", error, delay)

    def passed(self) -> None:
        with self._lock:
            self._strikes = 0


#: How often, at least, ``call_many`` lets its caller make what it recorded durable.
CHECKPOINT_SECONDS: Final = 0.5


def call_many(
    items: Sequence[Item],
    call: Callable[[Item, SharedRateLimitGate, threading.Event], T],
    *,
    policy: _api.RetryPolicy,
    max_in_flight: int,
    on_result: Callable[[int, T | HitPawError], None] | None = None,
    stop_on: Callable[[T | HitPawError], bool] | None = None,
    stop: threading.Event | None = None,
    budget: CoinBudget | None = None,
    checkpoint: Callable[[], None] | None = None,
) -> list[T | HitPawError]:
    """``call`` for every item, ``max_in_flight`` at a time; one result (a value, or its error) per item.

    ``on_result`` is called in the caller's thread as each item is done, so that the caller can record
    what was paid for as it happens. When the caller is interrupted (a task time-out, a SIGTERM, a
    failing ``on_result``), no request that has not started is sent, the ones under way finish (their
    retries stop), and every answer that arrived is still passed to ``on_result`` before the
    interruption goes on: a paid job must never go unrecorded. ``stop_on`` stops the same way, without
    an interruption, at the first result it says yes to (a bad key, no coins: the same for all the
    rest); the items not sent then end as :class:`~._transport.HitPawNotSentError`. ``stop`` is the same
    switch for the caller to throw from elsewhere (Airflow 3 asks a task to stop through ``on_kill``).
    With a ``budget``, each call first waits for the budget to cover it; an item it never will cover ends
    as its :class:`~airflow_provider_hitpaw.exceptions.HitPawBudgetError`, unsent. ``checkpoint`` (the
    caller making what ``on_result`` recorded durable) is called in the caller's thread at least every
    :data:`CHECKPOINT_SECONDS`, also while no answer arrives (others may be stalled by a long back-off),
    and on an interruption as soon as the answers already in are reported, before the ones under way are
    waited for: Airflow kills a task a few seconds after asking it to stop.
    """
    results: list[T | HitPawError | None] = [None] * len(items)
    reported: set[int] = set()
    stop = stop or threading.Event()
    gate = SharedRateLimitGate(policy, stop)

    def one(item: Item) -> T | HitPawError:
        if budget is not None and (refusal := budget.reserve()) is not None:
            return refusal
        try:
            result: T | HitPawError = call(item, gate, stop)
        except HitPawError as err:
            result = err
        except BaseException:
            if budget is not None:
                budget.settle(None)
            raise
        if budget is not None:
            budget.settle(result)
        if stop_on is not None and stop_on(result):
            stop.set()  # here, in the thread that saw it: its next item must not start
        return result

    def report(index: int, future: Future[T | HitPawError]) -> None:
        if index in reported or future.cancelled() or not future.done():
            return
        result = future.result()
        results[index] = result
        if on_result is not None:
            on_result(index, result)
        # Only now: an interruption inside on_result leaves the answer to be reported again (recording
        # one job twice is harmless; not recording a paid one is not).
        reported.add(index)

    def report_every_answer_in(futures: dict[Future[T | HitPawError], int]) -> None:
        for future, index in futures.items():
            try:
                report(index, future)
            except Exception:  # a failing recorder must not hide the other records, nor the interruption
                log.exception("Recording the result of item %d failed", index)

    pool = ThreadPoolExecutor(max_workers=max(1, max_in_flight), thread_name_prefix="hitpaw")
    futures: dict[Future[T | HitPawError], int] = {}
    try:
        futures = {pool.submit(one, item): index for index, item in enumerate(items)}
        pending = set(futures)
        while pending:
            timeout = CHECKPOINT_SECONDS if checkpoint is not None else None
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            for future in done:
                report(futures[future], future)
            if checkpoint is not None:
                checkpoint()
    except BaseException:
        stop.set()
        report_every_answer_in(futures)
        if checkpoint is not None:
            try:
                checkpoint()
            except Exception:
                log.exception("Recording the answers in before the interruption failed")
        pool.shutdown(wait=True, cancel_futures=True)
        report_every_answer_in(futures)
        raise
    pool.shutdown(wait=True)
    return results  # type: ignore[return-value]


def attempts_for(
    policy: _api.RetryPolicy, gate: SharedRateLimitGate, stop: threading.Event, **options: Any
) -> _transport.Attempts:
    """The attempts of one request of a batch: behind the batch's gate, stopped with the batch."""
    return _transport.Attempts(policy, gate=gate, stop=stop, **options)
