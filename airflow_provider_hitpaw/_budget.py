"""A batch's coin budget: submit only while what is spent plus what is in flight stays within it.

HitPaw names a job's price only in the answer to its submission, and charges a flat price per image (20
coins in its reference). So until the first answer arrives one submission at a time is in flight, priced
at the documented figure; from then on as many as fit, each priced at the highest price HitPaw named. A
submission whose outcome is unknown (its answer was lost after it may have been charged) counts as
spent: the budget errs on the side of the user's coins.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow_provider_hitpaw import _api
from airflow_provider_hitpaw.exceptions import HitPawBudgetError, HitPawSubmissionUnknownError


class CoinBudget:
    """Shared by the threads that submit one batch; thread-safe."""

    def __init__(self, limit: int, spent: int = 0, price: int | None = None) -> None:
        self.limit = limit
        self.spent = spent
        self._price = price
        self._in_flight = 0
        self._exhausted = False
        self._condition = threading.Condition()
        self.refused = 0

    @property
    def price(self) -> int:
        """What the next submission is reckoned to cost."""
        return self._price if self._price is not None else _api.COINS_PER_JOB

    def affordable(self) -> int:
        """How many more images the budget covers at the current price, nothing being in flight."""
        return max(0, (self.limit - self.spent) // self.price) if self.price > 0 else 1 << 62

    def reserve(self) -> HitPawBudgetError | None:
        """Wait until one more submission fits; None when it may go, the refusal when it never will."""
        with self._condition:
            while True:
                if self._exhausted:
                    return self.refusal()
                learning = self._price is None and self._in_flight > 0
                if not learning and self.spent + (self._in_flight + 1) * self.price <= self.limit:
                    self._in_flight += 1
                    return None
                if self._in_flight == 0:
                    self._exhausted = True
                    self._condition.notify_all()
                    return self.refusal()
                self._condition.wait(timeout=1.0)

    def settle(self, result: Any) -> None:
        """A reserved submission came back: a job (its price), an unknown outcome, or a refusal."""
        with self._condition:
            self._in_flight -= 1
            if isinstance(result, _api.SegmentationJob):
                coins = result.consume_coins
                if coins is not None:
                    self._price = max(self._price or 0, coins)
                self.spent += coins if coins is not None else self.price
            elif isinstance(result, HitPawSubmissionUnknownError):
                self.spent += self.price
            self._condition.notify_all()

    def refusal(self) -> HitPawBudgetError:
        """The error of an image left out (counted in :attr:`refused`)."""
        self.refused += 1
        return HitPawBudgetError(
            f"not submitted: the batch's budget of {self.limit:,} coins would not cover it "
            f"({self.spent:,} spent, {self.price:,} a submission)"
        )
