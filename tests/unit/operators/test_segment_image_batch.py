"""SegmentImageBatchOperator (thousands of images in one task): what it says when Airflow ends its
deferral, with and without a task state store to find its jobs again.

What a run pays across its tries is checked here against the emulator's books; the rest of it
(submitting, waiting, keeping results) against the emulator in ``tests/integration/test_batch.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from airflow_provider_hitpaw.exceptions import HitPawConfigurationError, HitPawError, HitPawTimeoutError
from airflow_provider_hitpaw.operators.hitpaw import SegmentImageBatchOperator
from tests.conftest import run_deferred
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


# --- what a run pays, across its tries: the ledger, against the emulator's books -----------------------

COST = 20


def jobs_of(emulator: Any) -> list[dict[str, Any]]:
    return list(emulator.state()["jobs"])


def charged(emulator: Any) -> int:
    return COST * len(jobs_of(emulator))


def reported(results: list[dict[str, Any]]) -> int:
    return sum(r["consume_coins"] or 0 for r in results)


def fails_with_results(operator: Any, context: dict[str, Any], match: str) -> list[dict[str, Any]]:
    with pytest.raises(AirflowException, match=match):
        run_deferred(operator, context)
    return list(context["ti"].xcom["results"])


def photos(emulator: Any, folder: Path, count: int) -> list[str]:
    """``count`` distinct photos in ``folder``, as a catalogue holds them."""
    import requests

    image = requests.get(emulator.sample_url("shoe.jpg"), timeout=10).content
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"sku-{n:03d}" / "main.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(image + f"copy {n}".encode())
        paths.append(str(path))
    return paths


@pytest.mark.usefixtures("fast_retries")
class TestWhatARunPays:
    def test_a_lost_answer_is_not_paid_for_again_by_a_retry(self, hitpaw_emulator: Any) -> None:
        """Each retry once submitted (and paid for) an image whose answer was lost again."""
        hitpaw_emulator.set_faults(["drop:first_n=2,after_commit=true,paths=/api/image-segmentation"])
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
        store = FakeStateStore()
        batch = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1, max_in_flight=1)
        first = fails_with_results(batch, task_context(store=store), "1 of 2 images")
        assert [r["error"]["type"] if r["error"] else None for r in first] == [
            "HitPawSubmissionUnknownError",
            None,
        ]
        # Known to be paid: nothing for the lost answer; said apart, what may have been charged.
        assert (first[0]["consume_coins"], first[0]["maybe_charged"]) == (0, 1)
        paid = charged(hitpaw_emulator)
        for try_number in (2, 3):
            again = fails_with_results(
                batch, task_context(store=store, try_number=try_number), "1 of 2 images"
            )
            assert again[0]["error"]["type"] == "HitPawSubmissionUnknownError"
            assert "not submitted again" in again[0]["error"]["message"]
        assert charged(hitpaw_emulator) == paid

    def test_a_lost_answer_counts_against_the_budget_of_a_retry(self, hitpaw_emulator: Any) -> None:
        hitpaw_emulator.set_faults(["drop:first_n=2,after_commit=true,paths=/api/image-segmentation"])
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
        store = FakeStateStore()
        batch = SegmentImageBatchOperator(
            task_id="b", file_urls=inputs, poll_interval=1, max_in_flight=1, max_coins=COST
        )
        fails_with_results(batch, task_context(store=store), "2 of 2 images")
        again = fails_with_results(batch, task_context(store=store, try_number=2), "2 of 2 images")
        assert again[1]["error"]["type"] == "HitPawBudgetError"
        assert len(jobs_of(hitpaw_emulator)) == 2  # the lost answer and the hook's one resend

    def test_one_edited_source_alone_is_paid_for_again(self, hitpaw_emulator: Any, tmp_path: Path) -> None:
        """The record was keyed by all inputs: one edit between tries made the retry pay for all."""
        sources = photos(hitpaw_emulator, tmp_path / "raw", 3)
        store = FakeStateStore()
        batch = SegmentImageBatchOperator(
            task_id="b", source_paths=sources, output_path=str(tmp_path / "out"), poll_interval=1
        )
        with pytest.raises(TaskDeferred):
            batch.execute(task_context(store=store))  # ... and the worker dies
        Path(sources[1]).write_bytes(Path(sources[1]).read_bytes() + b"edited")
        results = run_deferred(batch, task_context(store=store, try_number=2))
        assert [r["status"] for r in results] == ["COMPLETED"] * 3
        assert len(jobs_of(hitpaw_emulator)) == 4
        assert reported(results) == charged(hitpaw_emulator)

    def test_a_source_that_appears_for_the_retry_costs_one_image(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        sources = photos(hitpaw_emulator, tmp_path / "raw", 3)
        late = Path(sources[2]).read_bytes()
        Path(sources[2]).unlink()
        store = FakeStateStore()
        batch = SegmentImageBatchOperator(
            task_id="b",
            source_paths=sources,
            output_path=str(tmp_path / "out"),
            poll_interval=1,
            max_failed=1,
        )
        with pytest.raises(TaskDeferred):
            batch.execute(task_context(store=store))
        Path(sources[2]).write_bytes(late)
        results = run_deferred(batch, task_context(store=store, try_number=2))
        assert [r["status"] for r in results] == ["COMPLETED"] * 3
        assert len(jobs_of(hitpaw_emulator)) == 3

    def test_inputs_sharing_a_job_report_its_price_once(self, hitpaw_emulator: Any, tmp_path: Path) -> None:
        """Two names for one photo each reported 20 coins for their one shared job."""
        [source] = photos(hitpaw_emulator, tmp_path / "raw", 1)
        twin = tmp_path / "raw" / "twin.jpg"
        twin.write_bytes(Path(source).read_bytes())
        batch = SegmentImageBatchOperator(task_id="b", source_paths=[source, str(twin)], poll_interval=1)
        results = run_deferred(batch, task_context())
        assert results[0]["job_id"] == results[1]["job_id"]
        assert [r["consume_coins"] for r in results] == [COST, 0]
        assert reported(results) == charged(hitpaw_emulator)

    def test_an_input_given_twice_reports_its_price_once(self, hitpaw_emulator: Any) -> None:
        """The same URL listed twice is one job, and both results reported its 20 coins."""
        url = hitpaw_emulator.sample_url("shoe.jpg")
        batch = SegmentImageBatchOperator(task_id="b", file_urls=[url, url], poll_interval=1)
        results = run_deferred(batch, task_context())
        assert [r["consume_coins"] for r in results] == [COST, 0]
        assert reported(results) == charged(hitpaw_emulator)

    def test_under_skip_a_retry_reports_what_its_first_try_paid(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """A retry reported its own first try's pairs as reused, for 0 coins: the run paid 60, said 20."""
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("broken.jpg")]
        store = FakeStateStore()
        batch = SegmentImageBatchOperator(
            task_id="b", file_urls=inputs, output_path=str(tmp_path), overwrite="skip", poll_interval=1
        )
        fails_with_results(batch, task_context(store=store), "1 of 2 images")
        again = fails_with_results(batch, task_context(store=store, try_number=2), "1 of 2 images")
        assert again[0]["reused"] is False
        assert again[0]["consume_coins"] == COST
        assert reported(again) == charged(hitpaw_emulator) == 3 * COST

    def test_overwrite_fail_refuses_results_already_there_before_paying(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """The check ran after paying: a re-run paid for every image, then failed."""
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
        run_deferred(
            SegmentImageBatchOperator(task_id="b", file_urls=inputs, output_path=str(tmp_path)),
            task_context(),
        )
        paid = charged(hitpaw_emulator)
        rerun = SegmentImageBatchOperator(
            task_id="b", file_urls=inputs, output_path=str(tmp_path), overwrite="fail", poll_interval=1
        )
        with pytest.raises(AirflowFailException, match="exists already and overwrite='fail' keeps it"):
            rerun.execute(task_context(run_id="run-2"))
        assert charged(hitpaw_emulator) == paid

    def test_overwrite_fail_lets_a_retry_keep_what_its_first_try_kept(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """A retry under fail refused the files its own first try kept, and could never succeed."""
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("broken.jpg")]
        store = FakeStateStore()
        batch = SegmentImageBatchOperator(
            task_id="b", file_urls=inputs, output_path=str(tmp_path), overwrite="fail", poll_interval=1
        )
        fails_with_results(batch, task_context(store=store), "1 of 2 images")
        again = fails_with_results(batch, task_context(store=store, try_number=2), "1 of 2 images")
        assert again[0]["status"] == "COMPLETED"
        assert again[0]["error"] is None
        assert again[0]["consume_coins"] == COST

    def test_with_an_output_path_a_retry_finds_its_jobs_on_any_airflow(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """Without Airflow 3.3's store a retry refused to run at all; the ledger in the output folder
        lets it wait for the jobs its first try paid for."""
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
        batch = SegmentImageBatchOperator(
            task_id="b", file_urls=inputs, output_path=str(tmp_path), poll_interval=1
        )
        with pytest.raises(TaskDeferred):
            batch.execute(task_context())  # no task state store: Airflow before 3.3
        results = run_deferred(batch, task_context(try_number=2))
        assert [r["status"] for r in results] == ["COMPLETED"] * 2
        assert len(jobs_of(hitpaw_emulator)) == 2
        assert reported(results) == charged(hitpaw_emulator)
        # A worker lost after the batch ended well, before Airflow heard of it: the retry pays nothing.
        again = batch.execute(task_context(try_number=3))
        assert [r["job_id"] for r in again] == [r["job_id"] for r in results]
        assert len(jobs_of(hitpaw_emulator)) == 2

    @pytest.mark.parametrize("given", ["file_urls", "source_paths"])
    def test_one_job_id_answered_for_two_batches_keeps_nothing_for_the_second(
        self, hitpaw_emulator: Any, tmp_path: Path, given: str
    ) -> None:
        """Two mapped batches, one base URL answering every submission with the first job's id: the
        second batch's folder got the first image's cut-out."""
        hitpaw_emulator.set_faults(["same_job_id"])
        if given == "file_urls":
            first, second = [[hitpaw_emulator.sample_url(name)] for name in ("shoe.jpg", "mug.jpg")]
        else:
            first, second = [[path] for path in photos(hitpaw_emulator, tmp_path / "raw", 2)]
        for inputs, folder in ((first, "0"), (second, "1")):
            batch = SegmentImageBatchOperator(
                task_id="b", **{given: inputs}, output_path=str(tmp_path / folder), fail_on_error=False
            )
            [result] = run_deferred(batch, task_context())
        assert result["error"]["type"] == "HitPawUntrustedAnswerError"
        assert result["res_url"] is None
        assert not list((tmp_path / "1").glob("*.png"))

    def test_a_status_poll_that_failed_is_not_a_job_that_failed(self, hitpaw_emulator: Any) -> None:
        """One over-large status answer ended the job as ERROR (HitPaw could not segment the image) and
        counted it failed while HitPaw said COMPLETED; a retry now waits for the same job."""
        hitpaw_emulator.set_faults(["huge_json:first_n=1,size_bytes=3000000,paths=/api/task-status"])
        inputs = [hitpaw_emulator.sample_url("shoe.jpg")]
        store = FakeStateStore()
        batch = SegmentImageBatchOperator(task_id="b", file_urls=inputs, poll_interval=1)
        [first] = fails_with_results(batch, task_context(store=store), "1 of 1 images")
        assert first["status"] == "UNKNOWN"
        assert first["error"]["type"] != "HitPawJobFailedError"
        assert "could not be read" in first["error"]["message"]
        [again] = run_deferred(batch, task_context(store=store, try_number=2))
        assert again["status"] == "COMPLETED"
        assert again["job_id"] == first["job_id"]
        assert len(jobs_of(hitpaw_emulator)) == 1


# --- what a hostile review of the ledger found (each failed on eca81af) -----------------------------------


class Killed(BaseException):
    """SIGKILL, as seen from inside the process: nothing after it runs."""


def kill_at_nth_keep(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    from airflow_provider_hitpaw import storage

    real = storage.persist_job_results
    calls = {"n": 0}

    def persist(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == n:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "persist_job_results", persist)


@pytest.mark.usefixtures("fast_retries")
class TestWhatAHostileReviewFound:
    """Each of these failed on eca81af, the ledger's first version."""

    def test_a_lost_answer_is_not_paid_again_with_the_ledger_in_the_output_folder(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """Resuming wrote its piece of the ledger over the first one, and the lost answer was forgotten."""
        hitpaw_emulator.set_faults(["drop:first_n=2,after_commit=true,paths=/api/image-segmentation"])
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
        batch = SegmentImageBatchOperator(
            task_id="b", file_urls=inputs, output_path=str(tmp_path), poll_interval=1, max_in_flight=1
        )
        fails_with_results(batch, task_context(), "1 of 2 images")
        paid = charged(hitpaw_emulator)
        fails_with_results(batch, task_context(try_number=2), "1 of 2 images")
        assert charged(hitpaw_emulator) == paid

    @pytest.mark.parametrize("output", ["local", "memory"])
    def test_a_deferral_ended_by_airflow_keeps_the_ledger_for_the_retry(
        self,
        hitpaw_emulator: Any,
        tmp_path: Path,
        memory_root: str,
        monkeypatch: pytest.MonkeyPatch,
        output: str,
    ) -> None:
        """Compacting the ledger on resuming unlinked the piece it had just written: the retry paid again."""
        from airflow_provider_hitpaw._ledger_store import LedgerStore
        from tests.unit.fakes import TIMED_OUT

        monkeypatch.setattr(LedgerStore, "FLUSH_SECONDS", 0.0)  # a long submission: one piece per save
        hitpaw_emulator.configure(job_seconds=60)
        inputs = [hitpaw_emulator.sample_url(n) for n in ("shoe.jpg", "mug.jpg", "portrait.png")]
        folder = str(tmp_path) if output == "local" else f"{memory_root}/out"
        kwargs = {"task_id": "b", "file_urls": inputs, "output_path": folder, "max_in_flight": 1}
        context = task_context()
        with pytest.raises(TaskDeferred):
            SegmentImageBatchOperator(**kwargs).execute(context)
        with pytest.raises(HitPawTimeoutError):
            SegmentImageBatchOperator(**kwargs).resume_execution("__fail__", TIMED_OUT, context)
        paid = charged(hitpaw_emulator)
        with pytest.raises(TaskDeferred):
            SegmentImageBatchOperator(**kwargs).execute(task_context(try_number=2))
        assert charged(hitpaw_emulator) == paid

    def test_resuming_a_batch_of_sources_adds_no_unpriced_jobs(
        self, hitpaw_emulator: Any, tmp_path: Path, log_text: Any
    ) -> None:
        """Resuming rebuilt the keys without the fingerprints and recorded every job twice, unpriced."""
        sources = photos(hitpaw_emulator, tmp_path / "raw", 2)
        batch = SegmentImageBatchOperator(
            task_id="b", source_paths=sources, output_path=str(tmp_path / "out"), poll_interval=1
        )
        results = run_deferred(batch, task_context(store=FakeStateStore()))
        assert reported(results) == charged(hitpaw_emulator) == 2 * COST
        assert "whose price HitPaw did not name" not in log_text()
        assert "no longer in the batch" not in log_text()

    @pytest.mark.parametrize(("overwrite", "deferrable"), [("fail", True), ("fail", False), ("skip", True)])
    def test_a_kill_while_keeping_leaves_the_retry_its_own_files(
        self,
        hitpaw_emulator: Any,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        overwrite: str,
        deferrable: bool,
    ) -> None:
        """The ledger learnt of kept pairs only after all were kept: a kill midway left files a retry under
        fail refused as another run's (never succeeding), and under skip reported as reused for 0 coins."""
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
        kwargs = {
            "task_id": "b",
            "file_urls": inputs,
            "output_path": str(tmp_path),
            "overwrite": overwrite,
            "max_in_flight": 1,
            "deferrable": deferrable,
        }
        with monkeypatch.context() as patched:
            kill_at_nth_keep(patched, 2)
            batch = SegmentImageBatchOperator(**kwargs)
            with pytest.raises(Killed):
                run_deferred(batch, task_context()) if deferrable else batch.execute(task_context())
        paid = charged(hitpaw_emulator)
        retry = SegmentImageBatchOperator(**kwargs)
        context = task_context(try_number=2)
        results = run_deferred(retry, context) if deferrable else retry.execute(context)
        assert [r["status"] for r in results] == ["COMPLETED"] * 2
        assert charged(hitpaw_emulator) == paid
        assert reported(results) == paid

    def test_a_passing_outage_while_reattaching_leaves_the_retries_to_airflow(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """A job HitPaw forgot left an unsaved change; a 5xx then failed the batch for good, blaming a
        save that never failed."""
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
        kwargs = {"task_id": "b", "file_urls": inputs, "output_path": str(tmp_path), "max_in_flight": 1}
        with pytest.raises(TaskDeferred):
            SegmentImageBatchOperator(**kwargs).execute(task_context())  # ... and the worker dies
        first, _ = jobs_of(hitpaw_emulator)
        hitpaw_emulator.expire_job(first["job_id"])
        hitpaw_emulator.set_faults(
            [
                "slow:first_n=1,delay_s=0.01,paths=/api/task-status",  # job 1: HitPaw says it is unknown
                "500:first_n=1000,paths=/api/task-status",  # job 2: an outage
            ]
        )
        with pytest.raises(HitPawError, match="500"):  # not AirflowFailException: Airflow retries it
            SegmentImageBatchOperator(**kwargs).execute(task_context(try_number=2))

    def test_a_resubmission_answered_with_the_failed_jobs_id_is_reported_as_charged(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """HitPaw charged for the resubmission, whose answer named the job that had failed: the run
        reported one job's coins and a later try would have paid again."""
        hitpaw_emulator.set_faults(["same_job_id:paths=/api/image-segmentation"])
        inputs = [hitpaw_emulator.sample_url("broken.jpg")]
        batch = SegmentImageBatchOperator(task_id="b", file_urls=inputs, output_path=str(tmp_path))
        fails_with_results(batch, task_context(), "1 of 1 images")
        [again] = fails_with_results(batch, task_context(try_number=2), "1 of 1 images")
        assert again["error"]["type"] == "HitPawUntrustedAnswerError"
        assert reported([again]) == charged(hitpaw_emulator) == 2 * COST
        fails_with_results(batch, task_context(try_number=3), "1 of 1 images")
        assert charged(hitpaw_emulator) == 2 * COST


# --- a catalogue's folders kept (output_layout="mirror") -------------------------------------------------


class TestCatalogueFolders:
    def test_each_sku_keeps_its_folder_and_a_second_night_pays_nothing(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        sources = photos(hitpaw_emulator, tmp_path / "raw", 3)
        out = tmp_path / "cutouts"
        kwargs = {"task_id": "b", "source_paths": sources, "output_path": str(out), "overwrite": "skip"}
        results = run_deferred(SegmentImageBatchOperator(**kwargs, output_layout="mirror"), task_context())
        for n, result in enumerate(results):
            assert result["res_path"] == (out / f"sku-{n:03d}" / "main.png").as_uri()
            assert (out / f"sku-{n:03d}" / "main_mask.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (out / f"sku-{n:03d}" / "main.hitpaw.json").exists()
        night_2 = SegmentImageBatchOperator(**kwargs, output_layout="mirror")
        again = night_2.execute(task_context(run_id="night-2"))
        assert [r["reused"] for r in again] == [True] * 3
        assert len(jobs_of(hitpaw_emulator)) == 3

    def test_a_sku_that_appears_for_the_retry_keeps_every_name(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """The common folder is taken over every input given, not the ones there on this try: else a
        missing SKU would move the others' names between tries and runs."""
        sources = photos(hitpaw_emulator, tmp_path / "raw", 2)
        late = tmp_path / "raw" / "sku-009" / "main.jpg"
        batch = SegmentImageBatchOperator(
            task_id="b",
            source_paths=[sources[0], str(late)],
            output_path=str(tmp_path / "out"),
            output_layout="mirror",
            fail_on_error=False,
        )
        [kept, missing] = run_deferred(batch, task_context())
        assert kept["res_path"].endswith("/out/sku-000/main.png")
        assert missing["status"] == "NOT_SUBMITTED"

    def test_urls_mirror_their_path_below_the_root_given(self, hitpaw_emulator: Any, tmp_path: Path) -> None:
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), hitpaw_emulator.sample_url("mug.jpg")]
        root = inputs[0].rsplit("/", 1)[0]
        batch = SegmentImageBatchOperator(
            task_id="b",
            file_urls=inputs,
            output_path=str(tmp_path),
            output_layout="mirror",
            input_root="{{ params.root }}",
        )
        batch.input_root = root  # as rendered
        results = run_deferred(batch, task_context())
        assert [Path(r["res_path"]).name for r in results] == ["shoe.png", "mug.png"]

    def test_inputs_outside_the_root_are_refused_before_paying(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        sources = photos(hitpaw_emulator, tmp_path / "raw", 2)
        batch = SegmentImageBatchOperator(
            task_id="b",
            source_paths=sources,
            output_path=str(tmp_path / "out"),
            output_layout="mirror",
            input_root=str(tmp_path / "raw" / "sku-000"),
        )
        with pytest.raises(AirflowFailException, match="is not below"):
            batch.execute(task_context())
        assert jobs_of(hitpaw_emulator) == []

    def test_an_object_store_is_listed_once_below_every_sku(
        self, hitpaw_emulator: Any, tmp_path: Path, memory_root: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Reuse on an object store looks up a mirrored catalogue from one listing of the output."""
        from fsspec.implementations.memory import MemoryFileSystem

        sources = photos(hitpaw_emulator, tmp_path / "raw", 3)
        kwargs = {
            "task_id": "b",
            "source_paths": sources,
            "output_path": f"{memory_root}/cutouts",
            "overwrite": "skip",
            "output_layout": "mirror",
        }
        run_deferred(SegmentImageBatchOperator(**kwargs), task_context())
        assert MemoryFileSystem().exists(f"/{memory_root.removeprefix('memory://')}/cutouts/sku-002/main.png")
        listings: list[str] = []
        real_find = MemoryFileSystem.find

        def find(self: Any, path: str, *args: Any, **kw: Any) -> Any:
            listings.append(path)
            return real_find(self, path, *args, **kw)

        monkeypatch.setattr(MemoryFileSystem, "find", find)
        again = SegmentImageBatchOperator(**kwargs).execute(task_context(run_id="night-2"))
        assert [r["reused"] for r in again] == [True] * 3
        assert len(listings) == 1
        assert len(jobs_of(hitpaw_emulator)) == 3


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"output_layout": "tree"}, "output_layout"),
        ({"output_layout": "mirror", "output_path": None}, "output_layout"),
        ({"input_root": "/data/raw"}, "input_root"),
        ({"output_layout": "mirror", "input_root": " "}, "input_root"),
    ],
)
def test_a_bad_layout_is_refused_when_the_dag_is_parsed(kwargs: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"task_id": "b", "file_urls": [URL], "output_path": "/data/out", **kwargs}
    with pytest.raises(HitPawConfigurationError, match=field):
        SegmentImageBatchOperator(**arguments)


def test_the_credentials_of_an_input_url_stay_out_of_the_results(hitpaw_emulator: Any) -> None:
    """The results carried each URL verbatim, and HitPaw's echo of it (original_url), password included."""
    import json

    url = hitpaw_emulator.sample_url("shoe.jpg").replace("http://", "http://reader:URL-SECRET@", 1)
    context = task_context()
    results = run_deferred(SegmentImageBatchOperator(task_id="b", file_urls=[url]), context)
    assert results[0]["status"] == "COMPLETED"
    assert results[0]["file_url"] == hitpaw_emulator.sample_url("shoe.jpg")
    assert "URL-SECRET" not in json.dumps(results)


def test_the_credentials_of_an_input_url_stay_out_of_what_the_deferral_carries(hitpaw_emulator: Any) -> None:
    import json

    url = hitpaw_emulator.sample_url("shoe.jpg").replace("http://", "http://reader:URL-SECRET@", 1)
    context = task_context()
    with pytest.raises(TaskDeferred) as deferred:
        SegmentImageBatchOperator(task_id="b", file_urls=[url]).execute(context)
    assert "URL-SECRET" not in json.dumps(context["ti"].xcom) + json.dumps(deferred.value.kwargs)


class TestWhatTheDeferralCarries:
    def test_a_resumed_batch_reads_its_inputs_from_its_own_fields(self, hitpaw_emulator: Any) -> None:
        inputs = [hitpaw_emulator.sample_url("shoe.jpg"), "ftp://refused.example.test/a.jpg"]
        batch = SegmentImageBatchOperator(task_id="b", file_urls=inputs, fail_on_error=False)
        context = task_context()
        with pytest.raises(TaskDeferred) as deferred:
            batch.execute(context)
        assert inputs[0] not in repr(deferred.value.kwargs)
        results = run_deferred(batch, task_context())
        assert [r["status"] for r in results] == ["COMPLETED", "NOT_SUBMITTED"]

    def test_inputs_that_render_otherwise_on_resuming_keep_nothing(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """A template that renders anew (a time, a listing) would put one image's cut-out under another's
        name: the resumed try fails instead."""
        from tests.conftest import as_the_database_returns_it

        inputs = [hitpaw_emulator.sample_url("shoe.jpg")]
        batch = SegmentImageBatchOperator(task_id="b", file_urls=inputs, output_path=str(tmp_path))
        with pytest.raises(TaskDeferred) as deferred:
            batch.execute(task_context())
        resumed = SegmentImageBatchOperator(
            task_id="b", file_urls=[hitpaw_emulator.sample_url("mug.jpg")], output_path=str(tmp_path)
        )
        kwargs = as_the_database_returns_it(deferred.value.kwargs)
        event = {"status": "success", "jobs": {}}
        with pytest.raises(HitPawError, match="other inputs"):  # retried: the ledger in output_path
            resumed.execute_complete(task_context(), event, **kwargs)
        assert not list(tmp_path.glob("*.png"))
        # The retry judges the inputs afresh and finds the job the ledger holds: nothing paid again.
        [again] = run_deferred(
            SegmentImageBatchOperator(task_id="b", file_urls=inputs, output_path=str(tmp_path)),
            task_context(try_number=2),
        )
        assert again["status"] == "COMPLETED"
        assert len(jobs_of(hitpaw_emulator)) == 1

    def test_a_deferral_carried_by_the_version_before_resumes(self, hitpaw_emulator: Any) -> None:
        import asyncio

        url = hitpaw_emulator.sample_url("shoe.jpg")
        batch = SegmentImageBatchOperator(task_id="b", file_urls=[url])
        with pytest.raises(TaskDeferred) as deferred:
            batch.execute(task_context())
        carried = dict(deferred.value.kwargs)
        old = {"inputs": [url], "rejected": {}, "identities": {url: url}}
        old.update({k: carried[k] for k in ("jobs", "submitted_at")})
        trigger = deferred.value.trigger

        from tests.conftest import run_deferred as _  # noqa: F401  (the trigger runs below as the triggerer does)

        async def first() -> dict[str, Any]:
            async for event in trigger.run():
                return dict(event.payload)
            raise AssertionError("no event")

        resumed = SegmentImageBatchOperator(task_id="b", file_urls=[url])  # a new worker resumes it
        [result] = resumed.execute_complete(task_context(), asyncio.run(first()), **old)
        assert result["status"] == "COMPLETED"


class TestContactSheet:
    def test_a_batch_writes_pages_of_its_results_and_links_them(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        from PIL import Image

        sources = photos(hitpaw_emulator, tmp_path / "raw", 3)
        context = task_context()
        batch = SegmentImageBatchOperator(
            task_id="b", source_paths=sources, output_path=str(tmp_path / "out"), output_layout="mirror"
        )
        run_deferred(batch, context)
        [page] = sorted((tmp_path / "out" / ".hitpaw-contact-sheets").rglob("page-*.jpg"))
        ti = context["ti"]
        assert page.parent == tmp_path / "out" / ".hitpaw-contact-sheets" / ti.dag_id / ti.task_id / ti.run_id
        with Image.open(page) as sheet:
            assert sheet.format == "JPEG"
            assert sheet.width > 1000
        assert "contact_sheet" in context["ti"].xcom["hitpaw_links"]

    def test_no_sheet_when_asked_for_none(self, hitpaw_emulator: Any, tmp_path: Path) -> None:
        inputs = [hitpaw_emulator.sample_url("shoe.jpg")]
        batch = SegmentImageBatchOperator(
            task_id="b", file_urls=inputs, output_path=str(tmp_path), contact_sheet=False
        )
        run_deferred(batch, task_context())
        assert not (tmp_path / ".hitpaw-contact-sheets").exists()

    def test_a_sheet_that_cannot_be_written_fails_nothing(
        self, hitpaw_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from airflow_provider_hitpaw import _contact_sheet

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise OSError("disk full")

        monkeypatch.setattr(_contact_sheet, "pages", broken)
        inputs = [hitpaw_emulator.sample_url("shoe.jpg")]
        [result] = run_deferred(
            SegmentImageBatchOperator(task_id="b", file_urls=inputs, output_path=str(tmp_path)),
            task_context(),
        )
        assert result["status"] == "COMPLETED"


def picture(path: Path, draw: Any) -> str:
    """A photo made for a test: a plain grey ground, and what ``draw`` puts on it."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (400, 300), (235, 235, 235))
    draw(ImageDraw.Draw(image))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=95)
    return str(path)


STOREFRONT = {
    "storefront": {
        "background": "white",
        "crop": True,
        "margin": "5%",
        "canvas": "1000x1000",
        "fill": 0.85,
        "format": "jpeg",
    },
    "thumb": {"format": "webp", "max_side": 200},
}


class TestFinishes:
    def test_finishes_land_beside_each_cut_out_and_are_not_made_twice(
        self, hitpaw_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from PIL import Image

        from airflow_provider_hitpaw import _finish

        sources = photos(hitpaw_emulator, tmp_path / "raw", 2)
        kwargs: dict[str, Any] = {
            "task_id": "b",
            "source_paths": sources,
            "output_path": str(tmp_path / "out"),
            "output_layout": "mirror",
            "overwrite": "skip",
        }
        results = run_deferred(SegmentImageBatchOperator(**kwargs, finish=STOREFRONT), task_context())
        shop = tmp_path / "out" / "sku-000" / "main.storefront.jpg"
        assert results[0]["finishes"] == {
            "storefront": shop.as_uri(),
            "thumb": shop.with_name("main.thumb.webp").as_uri(),
        }
        with Image.open(shop) as image:
            assert (image.format, image.size, image.getpixel((5, 5))) == (
                "JPEG",
                (1000, 1000),
                (255, 255, 255),
            )
        with Image.open(shop.with_name("main.thumb.webp")) as image:
            assert max(image.size) == 200
        made: list[str] = []
        real = _finish.apply_finishes

        def counted(finishes: Any, *args: Any) -> Any:
            made.extend(f.name for f in finishes)
            return real(finishes, *args)

        monkeypatch.setattr(_finish, "apply_finishes", counted)
        SegmentImageBatchOperator(**kwargs, finish=STOREFRONT).execute(task_context(run_id="night-2"))
        assert made == []
        changed = {**STOREFRONT, "thumb": {"format": "webp", "max_side": 100}}
        again = SegmentImageBatchOperator(**kwargs, finish=changed).execute(task_context(run_id="night-3"))
        assert made == ["thumb", "thumb"]
        assert [r["reused"] for r in again] == [True, True]
        assert len(jobs_of(hitpaw_emulator)) == 2  # re-finished from the kept cut-outs, not paid again

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"finish": {"format": "png"}, "output_path": None}, "give output_path"),
            ({"finish": {"background": "blur"}}, "needs the original photo"),
            ({"finish": {"format": "gif"}}, "format"),
            ({"suspects": "ignore"}, "suspects"),
        ],
    )
    def test_bad_finishes_are_refused_when_the_dag_is_parsed(
        self, kwargs: dict[str, Any], match: str
    ) -> None:
        arguments: dict[str, Any] = {"task_id": "b", "file_urls": [URL], "output_path": "/data/out", **kwargs}
        with pytest.raises(HitPawConfigurationError, match=match):
            SegmentImageBatchOperator(**arguments)

    def test_a_templated_finish_is_judged_once_rendered(self) -> None:
        SegmentImageBatchOperator(
            task_id="b", file_urls=[URL], output_path="/d", finish="{{ params.finish }}"
        )

    def test_a_finish_without_pillow_is_refused_before_paying(
        self, hitpaw_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from airflow_provider_hitpaw import _results

        monkeypatch.setattr(_results, "has_pillow", lambda: False)
        batch = SegmentImageBatchOperator(
            task_id="b",
            file_urls=[hitpaw_emulator.sample_url("shoe.jpg")],
            output_path=str(tmp_path),
            finish=STOREFRONT,
        )
        with pytest.raises(AirflowFailException, match="needs Pillow"):
            batch.execute(task_context())
        assert jobs_of(hitpaw_emulator) == []


class TestSuspects:
    def photos_made_wrong(self, folder: Path) -> list[str]:
        return [
            picture(folder / "good.jpg", lambda d: d.ellipse((120, 80, 280, 220), fill=(200, 30, 30))),
            picture(folder / "empty.jpg", lambda d: None),
            picture(folder / "cut.jpg", lambda d: d.rectangle((0, 0, 150, 120), fill=(30, 30, 200))),
            picture(
                folder / "pieces.jpg",
                lambda d: [
                    d.ellipse((20 + 60 * n, 130, 50 + 60 * n, 160), fill=(20, 120, 20)) for n in range(6)
                ],
            ),
        ]

    def test_wrong_masks_are_flagged_and_counted(self, hitpaw_emulator: Any, tmp_path: Path) -> None:
        sources = self.photos_made_wrong(tmp_path / "raw")
        batch = SegmentImageBatchOperator(
            task_id="b", source_paths=sources, output_path=str(tmp_path / "out")
        )
        good, empty, cut, pieces = run_deferred(batch, task_context())
        assert good["suspect"] is None
        assert good["quality"]["pieces"] == 1
        assert empty["suspect"].startswith("nearly empty")
        assert cut["suspect"] == "cut by the frame's top and left edges"
        assert pieces["suspect"] == "6 separate pieces"
        assert all(r["error"] is None for r in (good, empty, cut, pieces))

    def test_under_fail_suspects_are_failures_judged_by_max_failed(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        sources = self.photos_made_wrong(tmp_path / "raw")
        batch = SegmentImageBatchOperator(
            task_id="b",
            source_paths=sources,
            output_path=str(tmp_path / "out"),
            suspects="fail",
            max_failed=2,
        )
        results = fails_with_results(batch, task_context(), "3 of 4 images")
        assert [r["error"]["type"] if r["error"] else None for r in results] == [
            None,
            "HitPawSuspectCutoutError",
            "HitPawSuspectCutoutError",
            "HitPawSuspectCutoutError",
        ]
        assert Path(results[1]["res_path"].removeprefix("file://")).exists()  # paid for: kept all the same


@pytest.mark.usefixtures("fast_retries")
class TestWhatTheMutationRunFound:
    def test_an_input_refused_by_a_retry_reports_what_its_first_try_paid(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """Under fail, a retry refused a source edited since its first try kept it (its files exist),
        and reported 0 coins: the run paid 40 and said 20."""
        sources = photos(hitpaw_emulator, tmp_path / "raw", 2)
        store = FakeStateStore()
        kwargs = {
            "task_id": "b",
            "source_paths": sources,
            "output_path": str(tmp_path / "out"),
            "overwrite": "fail",
        }
        run_deferred(SegmentImageBatchOperator(**kwargs, max_failed=1), task_context(store=store))
        Path(sources[0]).write_bytes(Path(sources[0]).read_bytes() + b"edited")
        # The worker was lost after the batch ended well, before Airflow heard of it: a retry runs.
        again = SegmentImageBatchOperator(**kwargs, max_failed=1).execute(
            task_context(store=store, try_number=2)
        )
        assert again[0]["status"] == "NOT_SUBMITTED"
        assert reported(again) == charged(hitpaw_emulator) == 2 * COST

    def test_a_source_gone_since_its_first_try_reports_what_it_paid(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        sources = photos(hitpaw_emulator, tmp_path / "raw", 2)
        store = FakeStateStore()
        kwargs = {
            "task_id": "b",
            "source_paths": sources,
            "output_path": str(tmp_path / "out"),
            "max_failed": 1,
        }
        run_deferred(SegmentImageBatchOperator(**kwargs), task_context(store=store))
        Path(sources[0]).unlink()
        again = SegmentImageBatchOperator(**kwargs).execute(task_context(store=store, try_number=2))
        assert again[0]["status"] == "NOT_SUBMITTED"
        assert reported(again) == charged(hitpaw_emulator) == 2 * COST


class TestWhatAReviewOfTheCatalogueFound:
    """Each failed on 7a43bc4."""

    def test_results_are_never_written_over_an_input(self, hitpaw_emulator: Any, tmp_path: Path) -> None:
        """output_path the inputs' own folder: a PNG photo's cut-out, or a finish named like another photo,
        replaced the photo, and every later night paid for it again."""
        from PIL import Image

        raw = tmp_path / "raw"
        for sku in ("sku-1", "sku-2"):
            (raw / sku).mkdir(parents=True)
            Image.new("RGB", (64, 64), (200, 30, 30)).save(raw / sku / "main.png")
        kwargs: dict[str, Any] = {"task_id": "b", "output_path": str(raw), "output_layout": "mirror"}
        pngs = sorted(str(p) for p in raw.glob("*/main.png"))
        with pytest.raises(AirflowFailException, match="is an input"):
            SegmentImageBatchOperator(**kwargs, source_paths=pngs).execute(task_context())
        shop = [str(raw / "sku-1" / "a.jpg"), str(raw / "sku-1" / "a.shop.jpg")]
        for path in shop:
            Image.new("RGB", (64, 64), (30, 30, 200)).save(path)
        finish = {"shop": {"background": "white", "format": "jpeg"}}
        with pytest.raises(AirflowFailException, match="is an input"):
            SegmentImageBatchOperator(
                **kwargs, source_paths=shop, finish=finish, input_root=str(raw)
            ).execute(task_context())
        assert jobs_of(hitpaw_emulator) == []

    def test_a_batch_of_one_folder_must_name_its_root(self, hitpaw_emulator: Any, tmp_path: Path) -> None:
        """Two one-SKU batches were both kept as out/main.png, the second over the first."""
        [source] = photos(hitpaw_emulator, tmp_path / "raw", 1)
        batch = SegmentImageBatchOperator(
            task_id="b", source_paths=[source], output_path=str(tmp_path / "out"), output_layout="mirror"
        )
        with pytest.raises(AirflowFailException, match="all in one folder"):
            batch.execute(task_context())
        assert jobs_of(hitpaw_emulator) == []

    def test_a_mask_too_large_to_measure_does_not_fail_a_paid_image(
        self, hitpaw_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from airflow_provider_hitpaw import _finish

        monkeypatch.setattr(_finish, "MAX_INPUT_PIXELS", 100)  # as a 61 MP photo against 50 MP
        inputs = [hitpaw_emulator.sample_url("shoe.jpg")]
        [result] = run_deferred(
            SegmentImageBatchOperator(task_id="b", file_urls=inputs, output_path=str(tmp_path)),
            task_context(),
        )
        assert (result["status"], result["error"]) == ("COMPLETED", None)
        assert "quality" not in result

    def test_under_fail_a_finish_file_there_already_is_refused_before_paying(
        self, hitpaw_emulator: Any, tmp_path: Path
    ) -> None:
        """A retoucher's hand-made main.shop.jpg was replaced under overwrite='fail'."""
        sources = photos(hitpaw_emulator, tmp_path / "raw", 2)
        (tmp_path / "out" / "sku-000").mkdir(parents=True)
        (tmp_path / "out" / "sku-000" / "main.shop.jpg").write_bytes(b"retouched by hand")
        batch = SegmentImageBatchOperator(
            task_id="b",
            source_paths=sources,
            output_path=str(tmp_path / "out"),
            output_layout="mirror",
            overwrite="fail",
            finish={"shop": {"background": "white", "format": "jpeg"}},
            max_failed=1,
        )
        results = run_deferred(batch, task_context())
        assert results[0]["status"] == "NOT_SUBMITTED"
        assert (tmp_path / "out" / "sku-000" / "main.shop.jpg").read_bytes() == b"retouched by hand"
        assert len(jobs_of(hitpaw_emulator)) == 1

    @pytest.mark.parametrize(
        "secret", ["?user=reader&password=URL-SECRET", "#access_token=URL-SECRET", "?sv=1&sig=URL-SECRET"]
    )
    def test_a_password_or_a_token_in_a_url_stays_out_of_the_results(
        self, hitpaw_emulator: Any, secret: str
    ) -> None:
        import json

        url = hitpaw_emulator.sample_url("shoe.jpg") + secret
        [result] = run_deferred(SegmentImageBatchOperator(task_id="b", file_urls=[url]), task_context())
        assert "URL-SECRET" not in json.dumps(result)

    def test_a_night_that_pays_nothing_reads_nothing_back_for_a_sheet(
        self, hitpaw_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        sources = photos(hitpaw_emulator, tmp_path / "raw", 3)
        kwargs = {
            "task_id": "b",
            "source_paths": sources,
            "output_path": str(tmp_path / "out"),
            "overwrite": "skip",
        }
        run_deferred(SegmentImageBatchOperator(**kwargs), task_context())
        read: list[str] = []
        real = SegmentImageBatchOperator._sheet_readers

        def counted(self: Any) -> Any:
            kept, source = real(self)
            return (lambda uri: read.append(uri) or kept(uri)), (
                lambda item: read.append(item) or source(item)
            )

        monkeypatch.setattr(SegmentImageBatchOperator, "_sheet_readers", counted)
        again = SegmentImageBatchOperator(**kwargs).execute(task_context(run_id="night-2"))
        assert [r["reused"] for r in again] == [True] * 3
        assert read == []
