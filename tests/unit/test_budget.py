"""A batch's coin budget: never more spent than allowed, however many threads submit at once."""

from __future__ import annotations

import random
import threading
import time

import pytest

from airflow_provider_hitpaw._api import COINS_PER_JOB, SegmentationJob
from airflow_provider_hitpaw._budget import CoinBudget
from airflow_provider_hitpaw.exceptions import (
    HitPawBudgetError,
    HitPawServerError,
    HitPawSubmissionUnknownError,
)

# A budget waits for submissions in flight: a test that gets it wrong hangs rather than fails.
pytestmark = pytest.mark.timeout(60)


def test_until_the_first_answer_one_submission_is_in_flight() -> None:
    budget = CoinBudget(1_000)
    assert budget.reserve() is None
    held = threading.Event()

    class Watched(threading.Condition):
        """The budget's condition, noting when a reservation has to wait on it."""

        def wait(self, timeout: float | None = None) -> bool:
            held.set()
            return super().wait(timeout)

    budget._condition = Watched()
    second: list[object] = []
    waiter = threading.Thread(target=lambda: second.append(budget.reserve()))
    waiter.start()
    # Until the second reservation waits, or ends without waiting (however long its thread takes to run).
    while not held.wait(0.01) and waiter.is_alive():
        pass
    assert held.is_set(), "a second submission went before the price was known"
    assert second == []
    budget.settle(SegmentationJob(job_id="j1", consume_coins=COINS_PER_JOB))
    waiter.join()
    assert second == [None]


def test_before_any_answer_a_submission_is_priced_at_the_documented_20_coins() -> None:
    budget = CoinBudget(1_000)
    assert budget.price == COINS_PER_JOB == 20
    assert budget.affordable() == 50


def test_the_highest_price_named_prices_the_rest() -> None:
    budget = CoinBudget(100)
    assert budget.reserve() is None
    budget.settle(SegmentationJob(job_id="j1", consume_coins=30))
    assert budget.price == 30
    assert [budget.reserve(), budget.reserve()] == [None, None]
    for n in (2, 3):
        budget.settle(SegmentationJob(job_id=f"j{n}", consume_coins=30))
    refusal = budget.reserve()
    assert isinstance(refusal, HitPawBudgetError)
    assert "budget of 100 coins" in str(refusal)


def test_an_unknown_outcome_counts_as_spent_a_refusal_does_not() -> None:
    budget = CoinBudget(60, price=20)
    budget.reserve()
    budget.settle(HitPawSubmissionUnknownError("answer lost"))
    budget.reserve()
    budget.settle(HitPawServerError("refused", code=500, http_status=500))
    assert budget.spent == 20
    assert budget.affordable() == 2


def test_an_unstated_price_counts_at_the_current_one() -> None:
    budget = CoinBudget(100, price=25)
    budget.reserve()
    budget.settle(SegmentationJob(job_id="j1", consume_coins=None))
    assert budget.spent == 25


def test_what_earlier_tries_spent_counts() -> None:
    budget = CoinBudget(100, spent=90)
    assert budget.affordable() == 0
    assert isinstance(budget.reserve(), HitPawBudgetError)


def test_many_threads_never_overspend() -> None:
    budget = CoinBudget(1_000)
    created: list[int] = []
    lock = threading.Lock()

    def submitter() -> None:
        while budget.reserve() is None:
            time.sleep(random.uniform(0, 0.005))
            price = random.choice([20, 20, 20, 25])
            with lock:
                created.append(price)
            budget.settle(SegmentationJob(job_id=f"j{len(created)}", consume_coins=price))

    threads = [threading.Thread(target=submitter) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # a budget that hangs fails by the module's time-out
    assert sum(created) <= 1_000
    assert budget.spent == sum(created)
    assert sum(created) > 1_000 - 2 * 25, "the budget stopped far below its limit"
