"""The ledger's rules, without I/O: what a later try waits for, submits again, and reports as paid."""

from __future__ import annotations

import json

from airflow_provider_hitpaw._ledger import Entry, Ledger, State, digest


def saved_and_loaded(ledger: Ledger) -> Ledger:
    again = Ledger()
    again.apply(json.loads(json.dumps(ledger.to_payload())))
    return again


def test_a_submitted_job_is_waited_for_again_and_never_paid_again() -> None:
    ledger = Ledger()
    ledger.submitted("https://a/1.jpg", "job-1", 20)
    loaded = saved_and_loaded(ledger)
    assert loaded.live_job("https://a/1.jpg") == "job-1"
    assert loaded.coins_paid("https://a/1.jpg") == 20
    assert loaded.live_job("https://a/2.jpg") is None


def test_the_ledger_names_inputs_by_digest_only() -> None:
    ledger = Ledger()
    ledger.submitted("https://user:secret@a/1.jpg?X-Amz-Signature=abc", "job-1", 20)
    ledger.kept(
        "https://user:secret@a/1.jpg?X-Amz-Signature=abc", "https://user:secret@a/1.jpg?X-Amz-Signature=abc"
    )
    text = json.dumps(ledger.to_payload())
    assert "secret" not in text
    assert "Signature" not in text
    assert "a/1.jpg" not in text


def test_a_lost_answer_is_not_sent_again_and_counts_as_spent() -> None:
    ledger = Ledger()
    ledger.answer_lost("k")
    loaded = saved_and_loaded(ledger)
    assert loaded.answer_was_lost("k")
    assert loaded.live_job("k") is None
    assert loaded.coins_paid("k") == 0  # known to be paid: nothing; it may have been charged
    assert loaded.maybe_charged("k") == 1
    assert loaded.coins_paid("k", unknown_price=20) == 20
    assert loaded.spent() == 20
    assert loaded.paid_any


def test_a_job_that_ended_in_error_may_be_submitted_again_and_both_are_reported() -> None:
    ledger = Ledger()
    ledger.submitted("k", "job-1", 20)
    ledger.ended("k", "job-1", completed=False)
    assert ledger.live_job("k") is None
    assert ledger.entry("k") == Entry(State.FAILED, "job-1", 20)
    ledger.submitted("k", "job-2", 20)
    assert ledger.live_job("k") == "job-2"
    assert ledger.coins_paid("k") == 40
    assert ledger.spent() == 40


def test_an_answer_recorded_twice_is_paid_once() -> None:
    ledger = Ledger()
    ledger.submitted("k", "job-1", 20)
    ledger.submitted("k", "job-1", 20)
    assert ledger.coins_paid("k") == 20


def test_a_job_of_unknown_price_counts_at_the_highest_price_named() -> None:
    ledger = Ledger()
    ledger.submitted("a", "job-1", 30)
    ledger.submitted("b", "job-2", None)
    assert ledger.coins_paid("b") is None
    assert ledger.highest_price() == 30
    assert ledger.spent() == 60


def test_kept_inputs_are_known_by_input_not_only_by_key() -> None:
    ledger = Ledger()
    ledger.submitted("content:x", "job-1", 20)
    ledger.kept("content:x", "s3://b/one.jpg")
    loaded = saved_and_loaded(ledger)
    assert loaded.kept_by_this_clearing("content:x", "s3://b/one.jpg")
    assert not loaded.kept_by_this_clearing("content:x", "s3://b/two.jpg")
    assert loaded.live_job("content:x") == "job-1"  # its other input still waits for the same job


def test_an_end_is_counted_once_and_only_for_the_current_job() -> None:
    ledger = Ledger()
    ledger.submitted("k", "job-1", 20)
    ledger.ended("k", "job-other", completed=True)  # not this key's job
    assert ledger.entry("k") == Entry(State.SUBMITTED, "job-1", 20)
    ledger.count("k")
    ledger.count("k")
    assert saved_and_loaded(ledger).entry("k") == Entry(State.SUBMITTED, "job-1", 20, counted=True)


def test_changes_are_taken_once_and_given_back_when_a_save_fails() -> None:
    ledger = Ledger()
    ledger.submitted("a", "job-1", 20)
    first = ledger.take_changes()
    assert list(first) == [digest("a")]
    assert ledger.take_changes() == {}
    ledger.give_back(first)
    assert ledger.has_changes
    ledger.submitted("b", "job-2", 20)
    assert set(ledger.take_changes()) == {digest("a"), digest("b")}


def test_unreadable_entries_are_skipped_as_if_never_written() -> None:
    ledger = Ledger()
    ledger.apply(
        {
            "a": ["submitted", "job-1", 20, 0, 0, False, [], None],
            "b": ["no-such-state", "job-2", 20, 0, 0, False, [], None],
            "c": ["submitted", 7, 20, 0, 0, False, [], None],
            "d": "job-4",
        }
    )
    assert list(ledger.entries) == ["a"]
    ledger.apply(["not", "a", "dict"])
    assert list(ledger.entries) == ["a"]


def test_what_was_paid_for_an_edited_input_is_reported_with_it() -> None:
    ledger = Ledger()
    ledger.submitted("content:v1", "job-1", 20, made_for="raw/sku-1/main.jpg")
    ledger.submitted("content:w1", "job-2", 20, made_for="raw/sku-2/main.jpg")
    ledger.submitted("content:v2", "job-3", 20, made_for="raw/sku-1/main.jpg")  # edited between tries
    gone = ledger.paid_for_gone_keys(["content:v2", "content:w1"])
    assert gone == {digest("raw/sku-1/main.jpg"): 20}
    assert ledger.spent() == 60
