"""SegmentImageBatchOperator (thousands of images in one task): what it says when Airflow ends its
deferral, with and without a task state store to find its jobs again.

The rest of it (submitting, waiting, keeping results) is tested against the emulator, in
``tests/integration/test_batch.py``.
"""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hitpaw.exceptions import HitPawConfigurationError, HitPawTimeoutError
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator
from tests.unit.fakes import TIMED_OUT, FakeStateStore, task_context

URL = "https://images.example.test/shoe-042.jpg"


# --- a deferral that Airflow ends itself ----------------------------------------------------------------


class TestDeferralEndedByAirflow:
    def test_a_batch_without_a_store_fails_for_good(self) -> None:
        context = task_context()
        other = URL.replace("042", "043")
        carried = {"jobs": ["j-1", "j-2"], "inputs": [URL, other], "rejected": {}}
        context["ti"].xcom_push(key="hitpaw_batch_submission", value=carried)
        batch = SegmentImageBatchOperator(task_id="b", file_urls=[URL, other])
        with pytest.raises(AirflowFailException, match="2 HitPaw jobs") as raised:
            batch.resume_execution("__fail__", TIMED_OUT, context)
        assert "this batch has paid for images" in str(raised.value)
        assert "a retry could not find their jobs" in str(raised.value)

    def test_a_batch_with_a_store_fails_normally_so_a_retry_waits_for_its_jobs(self) -> None:
        batch = SegmentImageBatchOperator(task_id="b", file_urls=[URL])
        with pytest.raises(HitPawTimeoutError, match="a retry waits for the same jobs"):
            batch.resume_execution("__fail__", TIMED_OUT, task_context(store=FakeStateStore()))


# --- inputs refused before anything is paid -------------------------------------------------------------


def test_refused_inputs_say_hitpaw_once(hitpaw_conn: str) -> None:
    """The batch quotes each input's refusal: it once said "HitPaw: file_urls: ... HitPaw: file_urls[0]"."""
    batch = SegmentImageBatchOperator(task_id="b", file_urls=["/data/a.jpg", "s3://bucket/b.jpg"])
    with pytest.raises(AirflowFailException) as raised:
        batch.execute(task_context())
    message = str(raised.value)
    assert message.startswith("HitPaw: file_urls: 2 input(s) HitPaw cannot take: file_urls[0]: ")
    assert message.count("HitPaw:") == 1
    assert isinstance(raised.value.__cause__, HitPawConfigurationError)


@pytest.mark.parametrize("timeout", [0, -1, 0.0])
def test_a_timeout_that_leaves_no_wait_is_refused_when_the_dag_is_parsed(timeout: float) -> None:
    """A batch with no time to wait would pay for every image and then fail."""
    with pytest.raises(HitPawConfigurationError, match="timeout: must be more than 0 seconds"):
        SegmentImageBatchOperator(task_id="b", file_urls=[URL], timeout=timeout)
