"""Where the ledger outlives a try: the output folder on any line, Airflow 3.3's task state store, or
nowhere; and what a failed or cut-off save leaves a later try."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_hitpaw._ledger import Ledger
from airflow_provider_hitpaw._ledger_store import LEDGER_FOLDER, LedgerStore
from airflow_provider_hitpaw.exceptions import HitPawStorageError
from tests.conftest import FakeStateStore, task_context

log = logging.getLogger(__name__)


def folder_store(folder: Path, try_number: int = 1, max_tries: int = 2) -> LedgerStore:
    from airflow_provider_hitpaw import storage

    context = task_context(try_number=try_number, max_tries=max_tries)
    return LedgerStore.for_task(context, storage.as_storage_path(str(folder)), log)


def test_a_ledger_saved_in_the_output_folder_is_found_by_the_next_try(tmp_path: Path) -> None:
    store = folder_store(tmp_path)
    ledger = store.load()
    ledger.submitted("a", "job-1", 20)
    store.save(ledger)
    ledger.submitted("b", "job-2", 20)
    store.save(ledger)
    assert store.durable(ledger)
    retry = folder_store(tmp_path, try_number=2).load()
    assert retry.live_job("a") == "job-1"
    assert retry.live_job("b") == "job-2"
    # Loading compacted the pieces into one.
    assert len(list((tmp_path / LEDGER_FOLDER).rglob("*.json"))) == 1
    assert folder_store(tmp_path, try_number=3).load().to_payload() == retry.to_payload()


def test_a_cleared_task_starts_a_new_ledger(tmp_path: Path) -> None:
    store = folder_store(tmp_path, max_tries=2)
    ledger = store.load()
    ledger.submitted("a", "job-1", 20)
    store.save(ledger)
    assert folder_store(tmp_path, try_number=3, max_tries=4).load().entries == {}


def test_a_save_cut_off_by_a_crash_reads_as_not_written(tmp_path: Path) -> None:
    store = folder_store(tmp_path)
    ledger = store.load()
    ledger.submitted("a", "job-1", 20)
    store.save(ledger)
    ledger.submitted("b", "job-2", 20)
    store.save(ledger)
    pieces = sorted((tmp_path / LEDGER_FOLDER).rglob("*.json"))
    pieces[-1].write_text('{"version": 1, "entries": {"')  # the crash came mid-write
    retry = folder_store(tmp_path, try_number=2).load()
    assert retry.live_job("a") == "job-1"
    assert retry.live_job("b") is None


def test_a_ledger_that_cannot_be_read_fails_the_try_before_paying(tmp_path: Path, monkeypatch: Any) -> None:
    store = folder_store(tmp_path)
    ledger = store.load()
    ledger.submitted("a", "job-1", 20)
    store.save(ledger)
    retry = folder_store(tmp_path, try_number=2)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError("Access Denied")

    monkeypatch.setattr(type(retry._backend), "read", refuse)  # type: ignore[arg-type]
    with pytest.raises(HitPawStorageError, match=r"cannot be read.*Access Denied.*rather than paying twice"):
        retry.load()


def test_a_failed_save_is_not_durable_until_a_later_save_succeeds(tmp_path: Path) -> None:
    store = LedgerStore.for_task(task_context(store=FailingStore()), None, log)
    ledger = store.load()
    ledger.submitted("a", "job-1", 20)
    store.save(ledger)
    assert not store.durable(ledger)
    assert store.write_failed
    FailingStore.fails = False
    store.save(ledger)
    assert store.durable(ledger)
    FailingStore.fails = True


class FailingStore(FakeStateStore):
    fails = True

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        if self.fails:
            raise RuntimeError("API server answered 503")
        super().set(key, value, **kwargs)


def test_the_task_state_store_keeps_the_ledger_in_small_pieces() -> None:
    store_values = FakeStateStore()
    store = LedgerStore.for_task(task_context(store=store_values), None, log)
    ledger = store.load()
    for n in range(700):
        ledger.submitted(f"https://a/{n}.jpg", f"job-{n}", 20)
    store.save(ledger)
    assert max(len(str(value)) for value in store_values.values.values()) < 64 * 1024
    retry = LedgerStore.for_task(task_context(store=store_values, try_number=2), None, log).load()
    assert retry.to_payload() == ledger.to_payload()
    again = LedgerStore.for_task(task_context(store=store_values, try_number=3), None, log).load()
    assert again.to_payload() == ledger.to_payload()


def test_without_a_folder_or_a_store_nothing_is_kept() -> None:
    store = LedgerStore.for_task(task_context(), None, log)
    ledger = store.load()
    ledger.submitted("a", "job-1", 20)
    store.save(ledger)
    assert not store.keeps
    assert not store.durable(ledger)


def test_two_tasks_writing_to_one_folder_keep_separate_ledgers(tmp_path: Path) -> None:
    from airflow_provider_hitpaw import storage

    folder = storage.as_storage_path(str(tmp_path))
    one, two = task_context(), task_context()
    two["ti"].task_id = "other"
    first = LedgerStore.for_task(one, folder, log)
    ledger = first.load()
    ledger.submitted("a", "job-1", 20)
    first.save(ledger)
    assert LedgerStore.for_task(two, folder, log).load().entries == {}
    assert Ledger().entries == {}
