"""``SegmentImageBatchOperator``: many images in one task, submitted with bounded concurrency, waited for
in one trigger, returned as one result per input.

DAG files import this module on every parse, so it imports neither HTTP clients nor the hooks at the top.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, BaseOperator

from airflow_provider_hitpaw import _api, _deferral, _metrics
from airflow_provider_hitpaw._connection_form import DEFAULT_CONN_ID
from airflow_provider_hitpaw._events import BatchEvent, Outcome
from airflow_provider_hitpaw._failures import fail_without_retry, task_failure
from airflow_provider_hitpaw._results import ResultOutput, fingerprint_of, folder_links, made_from_kept
from airflow_provider_hitpaw._state_store import first_try_of_clearing
from airflow_provider_hitpaw._wait import BATCH_STOPPING_ERRORS, BatchWatch
from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawError,
    HitPawInputsChangedError,
    HitPawJobFailedError,
    HitPawSubmissionUnknownError,
    HitPawTimeoutError,
    HitPawUntrustedAnswerError,
)
from airflow_provider_hitpaw.operators.segment_image import allows_internal_hosts, coins_text
from airflow_provider_hitpaw.validation import (
    validate_event_hold,
    validate_failure_threshold,
    validate_file_url,
    validate_poll_interval,
    validate_positive_int,
    validate_timeout,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

    from airflow_provider_hitpaw._api import SegmentationJob, TaskStatus
    from airflow_provider_hitpaw._ledger import Ledger
    from airflow_provider_hitpaw._ledger_store import LedgerStore
    from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

#: Where the submission travels across a deferral, on every Airflow line (the XCom of the same try).
SUBMISSION_XCOM_KEY: Final = "hitpaw_batch_submission"
RESULTS_XCOM_KEY: Final = "results"
NOT_SUBMITTED: Final = "NOT_SUBMITTED"


@dataclass
class _Inputs:
    """The inputs of one run, judged before anything is sent.

    Three levels: what was *given* (as written), each accepted input's *identity* (a URL as given, a
    stored file by its URI), which names its results, and each identity's submission *key*: the identity
    itself for a URL, the content for a stored file, so that two files with the same bytes are one job.
    """

    given: list[str]
    rejected: dict[str, str]
    #: Each accepted input's identity: one identity is one image, however many ways it was written.
    identity_of: dict[str, str]
    #: For ``source_paths``: each accepted source's ``(filename, content_type, size)``, by identity.
    sources: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    #: For ``source_paths``: what each source is (its content's fingerprint), by identity.
    fingerprints: dict[str, str] = field(default_factory=dict)
    #: The results an earlier run kept for an identity (reused, not submitted).
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Of those, the ones an earlier try of this clearing kept: paid for by this run, not reused.
    own: set[str] = field(default_factory=set)
    #: The URL each key's upload was submitted as (what its job's ``original_url`` must name).
    uploaded: dict[str, str] = field(default_factory=dict)
    #: Inputs refused after their identity was known (``overwrite="fail"``): where an earlier try's
    #: coins for them are reported.
    refused_identity: dict[str, str] = field(default_factory=dict)

    @property
    def identities(self) -> list[str]:
        """The identities of the accepted inputs, each once, in order of first appearance.

        The order comes from the ``given`` list, never from a mapping's keys: the metadata database may
        return a carried mapping with its keys reordered (PostgreSQL's JSONB sorts them), and the batch's
        jobs are aligned with this order.
        """
        return list(dict.fromkeys(self.identity_of[item] for item in self.given if item in self.identity_of))

    def key_of(self, identity: str) -> str:
        fingerprint = self.fingerprints.get(identity)
        return f"content:{fingerprint}" if fingerprint else identity

    @property
    def unique(self) -> list[str]:
        """The submission keys, each once, in order: what the batch's jobs (and its record) align with.
        Kept inputs keep their place, so that the alignment does not change between tries."""
        return list(dict.fromkeys(self.key_of(identity) for identity in self.identities))

    def representative(self) -> dict[str, str]:
        """The first identity of each key: the file uploaded, the name shown."""
        found: dict[str, str] = {}
        for identity in self.identities:
            found.setdefault(self.key_of(identity), identity)
        return found

    def needed(self) -> set[str]:
        """The keys some input still needs a job for (not every input of theirs is kept)."""
        return {self.key_of(identity) for identity in self.identities if identity not in self.kept}

    def to_xcom(self) -> dict[str, Any]:
        """What the resumed task needs of the inputs, without their text (a URL may carry credentials):
        digests of what was given, and the rest by the position of the first input it belongs to. The
        resumed task reads the inputs again from its own rendered fields (:meth:`from_carried`)."""
        first = self._first_positions()
        carried: dict[str, Any] = {
            "given": [_digest(item) for item in self.given],
            "rejected": {
                str(i): self.rejected[item] for i, item in enumerate(self.given) if item in self.rejected
            },
        }
        if self.fingerprints:
            carried["fingerprints"] = {str(first[k]): v for k, v in self.fingerprints.items() if k in first}
        if self.kept:
            carried["kept"] = {str(first[k]): v for k, v in self.kept.items() if k in first}
        if self.own:
            carried["own"] = sorted(first[k] for k in self.own if k in first)
        if self.uploaded:
            carried["uploaded"] = [self.uploaded.get(key) for key in self.unique]
        return carried

    def _first_positions(self) -> dict[str, int]:
        """Each identity's first position in ``given``."""
        found: dict[str, int] = {}
        for position, item in enumerate(self.given):
            if item in self.identity_of:
                found.setdefault(self.identity_of[item], position)
        return found

    @classmethod
    def from_carried(
        cls, carried: dict[str, Any], given: list[str], identity_of: dict[str, str]
    ) -> _Inputs | None:
        """The inputs as the submitting try judged them, from what it carried and the inputs as rendered
        again (``given``, with the identities of those not refused); None if they are not the same."""
        if carried.get("given") != [_digest(item) for item in given]:
            return None
        at = dict(enumerate(given))
        rejected = {at[int(i)]: str(reason) for i, reason in (carried.get("rejected") or {}).items()}
        accepted = {item: identity for item, identity in identity_of.items() if item not in rejected}

        def by_identity(value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                return {}
            return {accepted[at[int(i)]]: v for i, v in value.items() if at.get(int(i)) in accepted}

        own = carried.get("own")
        judged = cls(
            list(given),
            rejected,
            accepted,
            refused_identity={item: identity_of[item] for item in rejected if item in identity_of},
            fingerprints=by_identity(carried.get("fingerprints")),
            kept=by_identity(carried.get("kept")),
            own={accepted[at[i]] for i in own if at.get(i) in accepted} if isinstance(own, list) else set(),
        )
        uploaded = carried.get("uploaded")
        if isinstance(uploaded, list) and len(uploaded) == len(judged.unique):
            judged.uploaded = {key: url for key, url in zip(judged.unique, uploaded, strict=True) if url}
        return judged

    @classmethod
    def from_xcom(
        cls,
        inputs: list[str],
        rejected: dict[str, str],
        identities: Any,
        fingerprints: Any = None,
        kept: Any = None,
        own: Any = None,
        uploaded: Any = None,
    ) -> _Inputs:
        if not isinstance(identities, dict):  # carried by an earlier version: inputs were their identity
            identities = {item: item for item in inputs if item not in rejected}
        judged = cls(
            list(inputs),
            dict(rejected),
            dict(identities),
            fingerprints=dict(fingerprints) if isinstance(fingerprints, dict) else {},
            kept=dict(kept) if isinstance(kept, dict) else {},
            own={str(item) for item in own} if isinstance(own, list) else set(),
        )
        if isinstance(uploaded, list) and len(uploaded) == len(judged.unique):
            judged.uploaded = {key: url for key, url in zip(judged.unique, uploaded, strict=True) if url}
        return judged


def _digest(text: str) -> str:
    from airflow_provider_hitpaw._ledger import digest

    return digest(text)


#: Where a batch's contact sheets go in ``output_path`` (a hidden name: no mirrored folder can be it).
_CONTACT_SHEETS: Final = ".hitpaw-contact-sheets"
_SHEET_READ_BYTES: Final = 40 * 1024 * 1024


def _folder_link(folder: Any) -> str:
    from airflow_provider_hitpaw.links import folder_address

    return folder_address(folder)


#: Why a batch that paid nothing still fails for good where no ledger is kept across tries.
_NOTHING_PAID_NO_RETRY: Final = (
    "no coin was spent. Not retried automatically: on this Airflow a retry could not tell whether an "
    "earlier try paid for images, so a batch does not retry. Clear the task to run it again"
)


class SegmentImageBatchOperator(BaseOperator):
    """Segment many images in one task: submit them with bounded concurrency, wait in one trigger, return
    one result per input, in input order (README: "Thousands of images in one task").

    Each result is ``{"file_url", "job_id", "status", "consume_coins", "res_url", "mask_url", "error"}``
    (plus ``source_path``, ``res_path``, ``mask_path`` and ``reused`` where they apply): ``status`` is
    HitPaw's (``CONVERTING`` if the deadline came first) or ``NOT_SUBMITTED``; ``error`` is None or
    ``{"type", "code", "message"}``. An input given twice, or two sources with the same content, is one
    job. On Airflow 3.3 a retry waits for the jobs of the earlier try instead of paying again; on earlier
    lines a batch that may have paid is not retried automatically.

    :param file_urls: the images (templated), each checked like ``SegmentImageOperator``'s ``file_url``.
    :param source_paths: instead: images in any storage (templated), uploaded through HitPaw's pre-signed
        upload.
    :param source_conn_id: the connection of the sources' storage, when it needs one.
    :param output_path: where to keep every cut-out and mask, as ``SegmentImageOperator`` does.
    :param output_conn_id: the connection of ``output_path``'s storage, when it needs one.
    :param overwrite: when results exist already: ``overwrite``, ``fail`` or ``skip`` (inputs an earlier
        run kept there are not submitted: ``consume_coins: 0``, ``reused: True``).
    :param output_layout: ``flat`` (``<stem>-<hash>.png``, every result in ``output_path`` itself) or
        ``mirror`` (each input's folders kept: ``raw/sku-1/main.jpg`` gives ``sku-1/main.png``).
    :param input_root: with ``mirror``: the folder (or URL prefix) below which the inputs' paths are
        mirrored (templated); by default their deepest common folder, which moves when the inputs do.
    :param finish: storefront images made on the worker from each kept cut-out (templated): one dict, a
        list, or a dict of name to dict of ``background``, ``crop``, ``margin``, ``canvas``, ``fill``,
        ``format``, ``quality``, ``lossless``, ``max_side`` (README: "Storefront-ready"); needs the
        ``[finish]`` extra. A changed finish is made again from the kept cut-out, without paying HitPaw.
    :param suspects: what a cut-out whose mask looks wrong (nearly empty, nearly everything, cut by the
        frame, in many pieces) does: ``flag`` (its result says why) or ``fail`` (judged as a failure,
        under ``max_failed``).
    :param contact_sheet: with ``output_path``, write a contact sheet of the results (input, cut-out on a
        checkerboard, first finish; suspects first) in JPEG pages under ``.hitpaw-contact-sheets/``, linked
        from the task (needs Pillow: the ``[finish]`` extra; without it, skipped with a note in the log).
    :param hitpaw_conn_id: the ``hitpaw`` connection.
    :param max_in_flight: submissions (and, on the worker, status requests) in flight at once.
    :param poll_interval: seconds between two polls of the same job (at least 1).
    :param min_deferred_seconds: stay deferred at least this long, against an Airflow 3 race that fails a
        try resumed within seconds; 0 turns the hold off; None: ``[hitpaw] min_deferred_seconds`` (10 s).
    :param timeout: seconds to wait for the whole batch, from the start of this try (at most 8 days).
    :param fail_on_error: fail the task, once every image has ended, when any failed; False leaves the
        per-image results to downstream tasks.
    :param max_failed: with ``fail_on_error``: how many images may fail (a count, or a fraction such as
        ``0.02``) before the task fails; inputs refused before submitting count too.
    :param max_coins: the coins the batch may spend, submissions in flight counted at their price (a
        lost answer sent again may cost one image more); the images left out end ``NOT_SUBMITTED``
        with ``HitPawBudgetError`` and are judged as other failures.
    :param deferrable: wait in the triggerer (True) or poll from this worker (False).
    """

    template_fields: Sequence[str] = ("file_urls", "source_paths", "output_path", "input_root", "finish")
    ui_color = "#aed6f1"
    _costs: dict[str, int | None]
    _created: list[str | None]
    _submitted_at: dict[str, float]
    _stop: threading.Event
    #: Each source's identity, and the source as given (an ObjectStoragePath keeps its conn_id).
    _source_items: dict[str, Any]
    #: The output with its result names resolved, once per try (see :meth:`_output`).
    _laid_out: ResultOutput | None = None

    def __init__(
        self,
        *,
        file_urls: list[str] | str | None = None,
        source_paths: list[Any] | str | None = None,
        source_conn_id: str | None = None,
        output_path: Any = None,
        output_conn_id: str | None = None,
        overwrite: str = "overwrite",
        output_layout: str = "flat",
        input_root: Any = None,
        finish: Any = None,
        suspects: str = "flag",
        contact_sheet: bool = True,
        hitpaw_conn_id: str = DEFAULT_CONN_ID,
        max_in_flight: int = 8,
        poll_interval: float = 3,
        min_deferred_seconds: float | None = None,
        timeout: float = 3 * 3600,
        fail_on_error: bool = True,
        max_failed: float | None = None,
        max_coins: int | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        if (file_urls is None) == (source_paths is None):
            raise HitPawConfigurationError(
                "file_urls", "give either file_urls or source_paths, not both or none"
            )
        ResultOutput.checked(
            output_path,
            output_conn_id,
            overwrite,
            waits=True,
            output_layout=output_layout,
            input_root=input_root,
            finish=finish,
            has_original=source_paths is not None,
        )
        if suspects not in ("flag", "fail"):
            raise HitPawConfigurationError("suspects", f"must be 'flag' or 'fail', not {suspects!r}")
        super().__init__(**kwargs)
        self.file_urls = file_urls
        self.source_paths = source_paths
        self.source_conn_id = source_conn_id
        self.output_path = output_path
        self.output_conn_id = output_conn_id
        self.overwrite = overwrite
        self.output_layout = output_layout
        self.input_root = input_root
        self.finish = finish
        self.suspects = suspects
        self.contact_sheet = contact_sheet
        self.hitpaw_conn_id = hitpaw_conn_id
        self.max_in_flight = validate_positive_int(max_in_flight, "max_in_flight")
        self.poll_interval = validate_poll_interval(poll_interval)
        self.min_deferred_seconds = validate_event_hold(min_deferred_seconds)
        self.timeout = validate_timeout(timeout)
        self.fail_on_error = fail_on_error
        self.max_failed = validate_failure_threshold(max_failed)
        if max_failed is not None and not fail_on_error:
            raise HitPawConfigurationError(
                "max_failed", "has no effect with fail_on_error=False; give one of them"
            )
        self.max_coins = None if max_coins is None else validate_positive_int(max_coins, "max_coins")
        self.deferrable = deferrable

    operator_extra_links = folder_links()

    def _hook(self) -> HitPawHook:
        from airflow_provider_hitpaw.hooks.hitpaw import HitPawHook

        return HitPawHook(self.hitpaw_conn_id, pool_size=self.max_in_flight)

    def _output(self) -> ResultOutput:
        """The output, its names resolved once per try from every input given (a source missing on this
        try counts too, so that the common folder, and every name, stays put when it appears)."""
        if self._laid_out is None:
            output = ResultOutput.checked(
                self.output_path,
                self.output_conn_id,
                self.overwrite,
                waits=True,
                output_layout=self.output_layout,
                input_root=self.input_root,
                finish=self.finish,
                has_original=self.source_paths is not None,
            )
            self._laid_out = output.laid_out(
                self.output_layout, self.input_root, self.source_conn_id, self._given_identities()
            )
        return self._laid_out

    def _given_identities(self) -> list[str]:
        from airflow_provider_hitpaw import storage

        given = self.file_urls if self.source_paths is None else self.source_paths
        found: list[str] = []
        for item in given if isinstance(given, list | tuple) else ():
            if self.source_paths is None:
                if str(item).strip().lower().startswith(("http://", "https://")):
                    found.append(str(item).strip())  # others are refused as inputs, with their reason
                continue
            try:
                found.append(storage.input_identity(item, self.source_conn_id))
            except HitPawConfigurationError:
                continue  # refused as an input, with its reason, before anything is paid
        return found

    # -- submitting ------------------------------------------------------------------------------------

    def execute(self, context: Context) -> list[dict[str, Any]]:
        # The links are resolved whenever the try ends, a deferral too: they find a value from the start.
        self._push_folder_link(context)
        with self._hook() as hook:
            try:
                inputs = self._judge_inputs(hook)
                store = self._ledger_store(context)
                ledger = store.load()
                self._find_kept(inputs, ledger)
                self._refuse_existing(inputs)
                self._check_refusals(inputs)
            except HitPawError as err:  # before paying: a passing fault keeps Airflow's retries
                raise task_failure(err) from err
            if first_try_of_clearing(context, int(self.retries or 0)):
                # A retry finds again what the first try found kept (or kept itself): counted once.
                _metrics.count_reused(len(inputs.kept) - len(inputs.own))
            self._refuse_a_blind_retry(context, store)
            self._submitted_at = {}
            self._stop = threading.Event()
            try:
                jobs = self._submit_all(hook, inputs, ledger, store)
            except BaseException as err:
                self._push_partial(context, inputs, ledger)
                raise self._failure(err, ledger, store) from err
            submitted = [job for job in jobs if isinstance(job, str)]
            if not submitted or not self.deferrable:
                try:
                    event = self._wait_in_process(hook, submitted)
                    return self._finish(context, hook, inputs, jobs, event, ledger, store)
                except BaseException as err:
                    raise self._failure(err, ledger, store) from err
        from airflow_provider_hitpaw.triggers.hitpaw import SegmentationBatchTrigger

        # What the resumed task needs travels in the try's own XCom, which every Airflow line keeps
        # across a deferral (``airflow dags test`` drops the kwargs given to defer()). The ledger goes
        # with it only where its store may lack some of it.
        carried = {**inputs.to_xcom(), "jobs": jobs, "submitted_at": self._submitted_at}
        if not store.durable(ledger):
            carried["ledger"] = ledger.to_payload()
        context["ti"].xcom_push(key=SUBMISSION_XCOM_KEY, value=carried)
        end_time = _deferral.try_started_at(context) + self.timeout
        self.defer(
            trigger=SegmentationBatchTrigger(
                job_ids=submitted,
                hitpaw_conn_id=self.hitpaw_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                max_in_flight=max(16, self.max_in_flight),
                not_before=_deferral.event_not_before(self.min_deferred_seconds),
            ),
            method_name="execute_complete",
            kwargs=carried,
            timeout=_deferral.deferral_timeout(end_time),
        )
        raise AssertionError("defer() always raises")  # pragma: no cover

    def _ledger_store(self, context: Context) -> LedgerStore:
        return self._output().ledger_store(context, self.log)

    @property
    def _field(self) -> str:
        return "file_urls" if self.source_paths is None else "source_paths"

    def _judge_inputs(self, hook: HitPawHook) -> _Inputs:
        """The inputs, and those HitPaw could not take with the reason, before any coin is spent (and
        before any upload); with ``output_path``, also the storage and the result names."""
        given = self.file_urls if self.source_paths is None else self.source_paths
        if isinstance(given, str) or not isinstance(given, list | tuple):
            raise HitPawConfigurationError(self._field, f"must be a list, got {type(given).__name__}")
        allow_internal = allows_internal_hosts(hook) if self.source_paths is None else False
        self._source_items = {}
        self._output().check_storage()
        items = [item.strip() if isinstance(item, str) else item for item in given]
        rejected: dict[str, str] = {}
        identity_of: dict[str, str] = {}
        sources: dict[str, tuple[str, str, int]] = {}
        fingerprints: dict[str, str] = {}
        refused_identity: dict[str, str] = {}
        for index, item in enumerate(items):
            text = str(item)
            identity = ""
            try:
                if self.source_paths is None:
                    validate_file_url(item, field=f"file_urls[{index}]", allow_internal_hosts=allow_internal)
                    identity = text
                else:
                    from airflow_provider_hitpaw import storage

                    identity = storage.input_identity(item, self.source_conn_id)
                    self._source_items.setdefault(identity, item)  # with its own connection, if any
                    if identity not in sources:
                        sources[identity] = storage.read_source(item, conn_id=self.source_conn_id)
                        fingerprints[identity] = fingerprint_of(item, self.source_conn_id) or ""
            except HitPawConfigurationError as refused:
                rejected[text] = str(refused)
                if identity:  # a source gone since an earlier try paid for it
                    refused_identity[text] = identity
            else:
                identity_of[text] = identity
        inputs = _Inputs([str(item) for item in items], rejected, identity_of, sources, fingerprints)
        inputs.refused_identity = refused_identity
        if self.output_path is not None:
            from airflow_provider_hitpaw import storage

            output = self._output()
            storage.check_unique_names(inputs.identities, output.layout, output.finishes)
            output.check_not_over_inputs(inputs.identities)
        return inputs

    def _check_refusals(self, inputs: _Inputs) -> None:
        """Fail before paying when more inputs were refused than ``max_failed`` tolerates."""
        rejected = inputs.rejected
        if rejected and self.fail_on_error and len(rejected) > self._allowed_failures(len(inputs.given)):
            shown = "; ".join(list(rejected.values())[:5])
            raise HitPawConfigurationError(
                self._field, f"{len(rejected)} input(s) HitPaw cannot take: {shown}"
            )

    def _find_kept(self, inputs: _Inputs, ledger: Ledger) -> None:
        """The inputs whose results are kept already, found before anything is uploaded or paid for
        (``max_in_flight`` lookups at a time: an object store answers slowly): with ``overwrite="skip"``
        those an earlier run kept, and under any policy those an earlier try of this clearing kept (paid
        by this run: reported with their coins, not as reused)."""
        output = self._output()
        # Pairs this clearing may have kept: the ledger says so, or it holds the job their record names
        # (a crash can come between a pair landing and the ledger's next save).
        own = [i for i in inputs.identities if ledger.live_job(inputs.key_of(i)) is not None]
        wanted = inputs.identities if output.reuses else own
        if output.path is None or not wanted:
            return
        from concurrent.futures import ThreadPoolExecutor

        listing = output.list_kept(wanted)

        def look(identity: str) -> tuple[str, Any]:
            fingerprint = inputs.fingerprints.get(identity)
            return identity, output.find_kept(identity, fingerprint, listing, any_policy=identity in own)

        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="hitpaw-kept") as pool:
            for identity, kept in pool.map(look, wanted):
                if kept is None:
                    continue
                if kept.job_id == ledger.live_job(inputs.key_of(identity)):
                    inputs.own.add(identity)
                    ledger.kept(inputs.key_of(identity), identity)
                elif not output.reuses:
                    continue  # another job's pair: not this run's, and not to be reused
                inputs.kept[identity] = kept.as_result()

    def _refuse_existing(self, inputs: _Inputs) -> None:
        """With ``overwrite="fail"``: inputs whose results are in ``output_path`` already (and not this
        run's own) are refused now, before any coin, like inputs HitPaw cannot take."""
        output = self._output()
        if output.path is None or output.overwrite != "fail":
            return
        candidates = [i for i in inputs.identities if i not in inputs.kept]
        for identity, shown in output.existing(candidates).items():
            for item, named in list(inputs.identity_of.items()):
                if named == identity:
                    del inputs.identity_of[item]
                    inputs.refused_identity[item] = identity
                    inputs.rejected[item] = (
                        f"{shown} exists already and overwrite='fail' keeps it: not submitted"
                    )

    def _allowed_failures(self, total: int) -> float:
        """How many failed images the task tolerates (``max_failed``; none by default)."""
        if self.max_failed is None:
            return 0
        if isinstance(self.max_failed, float):
            return self.max_failed * total
        return self.max_failed

    def on_kill(self) -> None:
        """Airflow 3 stops a task by calling this on SIGTERM, then kills it a few seconds later: stop
        submitting at once, so that every answer that arrives is recorded before the kill."""
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        super().on_kill()

    def _push_partial(self, context: Context, inputs: _Inputs, ledger: Ledger) -> None:
        """On an interruption (time-out, SIGTERM) while submitting: the jobs paid for so far, in XCom and
        the log, so that what was paid for is never unknown."""
        paid = {
            shown: job
            for key, shown in inputs.representative().items()
            if (job := ledger.live_job(key)) is not None
        }
        if not paid:
            return
        self.log.warning("Interrupted after %d images were submitted: %s", len(paid), _shown_jobs(paid))
        try:
            context["ti"].xcom_push(key="submitted_jobs", value=_without_credentials(paid))
        except Exception:  # the interruption matters more than this record
            self.log.warning("Could not push the submitted jobs to XCom", exc_info=True)

    def _refuse_a_blind_retry(self, context: Context, store: LedgerStore) -> None:
        """Where no ledger of the earlier tries can be kept, a retry cannot tell which images an earlier
        try paid for: it would pay for all of them again. It stops instead (clearing the task, a
        deliberate new start, runs again)."""
        if store.keeps or first_try_of_clearing(context, int(self.retries or 0)):
            return
        raise AirflowFailException(
            "An earlier try of this batch may have submitted (and paid for) images, and this task keeps "
            "no ledger a retry could find them in (give it an output_path, or run Airflow 3.3); not "
            "submitting again blindly. Clear the task to run the batch again (images the earlier try "
            "paid for are then paid for again)"
        )

    def _failure(self, err: BaseException, ledger: Ledger, store: LedgerStore) -> BaseException:
        """The one rule for how a try that ends in ``err`` fails: a retry is allowed only where it would
        find every job this clearing paid for (the ledger is saved where a retry reads it) or nothing
        was paid; otherwise the failure is final, and says why."""
        if isinstance(err, SystemExit | KeyboardInterrupt | GeneratorExit):
            return err
        failure = task_failure(err) if isinstance(err, HitPawError) else err
        if isinstance(failure, AirflowFailException):
            return failure
        if ledger.has_changes and not store.write_failed:
            store.save(ledger)  # what this try learnt (a job HitPaw forgot, say) is for the retry to read
        if store.durable(ledger):
            return failure
        if store.keeps and not ledger.paid_any:
            return failure
        if not ledger.paid_any:
            # Its retry would refuse anyway: it could not tell this try paid for nothing.
            return fail_without_retry(f"{_words(err)}; {_NOTHING_PAID_NO_RETRY}")
        why = (
            f"saving the batch's ledger to {store.where} failed"
            if store.keeps
            else "this task keeps no ledger (no output_path, and no task state store before Airflow 3.3)"
        )
        return fail_without_retry(
            f"{_words(err)}; not retried automatically: this batch has paid for images, and {why}, so a "
            "retry could not find their jobs and would pay for them again"
        )

    def _sources_to_urls(
        self, hook: HitPawHook, inputs: _Inputs, items: list[str]
    ) -> list[str | HitPawError]:
        """The URL HitPaw should fetch for each input: the URL itself, or the uploaded copy of a source."""
        if self.source_paths is None:
            return list(items)
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_hitpaw import storage

        # The longest validity HitPaw grants: thousands of uploads at max_in_flight take a while.
        presigned = hook.presign_uploads([inputs.sources[item][:2] for item in items], expire_seconds=7200)

        def upload(item: str, target: Any) -> str | HitPawError:
            if isinstance(target, HitPawError):
                return target
            try:
                given = self._source_items.get(item, item)  # a path keeps its own connection
                with storage.open_source(given, conn_id=self.source_conn_id) as stream:
                    hook.upload(target, stream)
            except HitPawError as err:
                return err
            return str(target.access_url)

        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="hitpaw-upload") as pool:
            urls = list(pool.map(upload, items, presigned))
        self.log.info("Uploaded %d of %d sources", sum(isinstance(u, str) for u in urls), len(items))
        return urls

    def _submit_all(
        self, hook: HitPawHook, inputs: _Inputs, ledger: Ledger, store: LedgerStore
    ) -> list[str | dict[str, Any] | None]:
        """A job id (or the submission's error) per submission key; None for a key whose inputs are all
        kept. A key's job recorded in the ledger is waited for again where it can still end well; a key
        is submitted only where the ledger holds no such job, within ``max_coins``."""
        from airflow_provider_hitpaw._budget import CoinBudget

        unique = inputs.unique
        needed = inputs.needed()
        shown_as = inputs.representative()
        not_yet = _error_dict(HitPawConfigurationError("job_id", "not submitted"))
        jobs: list[str | dict[str, Any] | None] = [dict(not_yet) if key in needed else None for key in unique]
        self._reattach(hook, unique, needed, ledger, jobs)
        missing = []
        for index, key in enumerate(unique):
            if not isinstance(jobs[index], dict):
                continue
            if ledger.answer_was_lost(key):
                jobs[index] = _error_dict(
                    HitPawSubmissionUnknownError(
                        "an earlier try's submission of this image lost its answer after HitPaw may have "
                        "charged for it: not submitted again in this run; clear the task to submit it again"
                    )
                )
            else:
                missing.append(index)
        budget = None
        if self.max_coins is not None:
            # What the earlier tries of this clearing paid (or may have paid) counts against the same
            # budget; a price HitPaw did not name counts at the highest it named (or documents).
            budget = CoinBudget(self.max_coins, spent=ledger.spent(), price=ledger.highest_price())
            affordable = budget.affordable()
            for index in missing[affordable:]:  # not even uploaded: the budget cannot cover them
                jobs[index] = _error_dict(budget.refusal())
            missing = missing[:affordable]
        self._log_plan(inputs, len(missing), budget)
        urls = self._sources_to_urls(hook, inputs, [shown_as[unique[i]] for i in missing])
        to_submit: list[tuple[int, str]] = []
        for index, url in zip(missing, urls, strict=True):
            if isinstance(url, HitPawError):
                jobs[index] = _error_dict(url)
            else:
                to_submit.append((index, url))
                if self.source_paths is not None:
                    inputs.uploaded[unique[index]] = url
        progress = _SubmitProgress(self.log, len(to_submit))
        stopping: list[HitPawError] = []
        owner = {job: unique[index] for index, job in enumerate(jobs) if isinstance(job, str)}
        #: Jobs of earlier tries (also those that failed): a submission answered with one made no new job.
        earlier = ledger.job_ids()
        created: dict[str, int | None] = {}
        handled: set[int] = set()

        def submitted(position: int, result: SegmentationJob | HitPawError) -> None:
            index = to_submit[position][0]
            key = unique[index]
            answered = result
            if not isinstance(result, HitPawError) and result.job_id in earlier:
                result = HitPawUntrustedAnswerError(
                    f"HitPaw answered job id {result.job_id!r} for {_shown(shown_as[key])}, the id of a "
                    "job an earlier try made: no new job can have it; this image may have been charged and "
                    "is not submitted again in this run"
                )
            elif not isinstance(result, HitPawError) and owner.setdefault(result.job_id, key) != key:
                result = HitPawUntrustedAnswerError(
                    f"HitPaw answered job id {result.job_id!r} for {_shown(shown_as[key])} too, "
                    f"after {_shown(shown_as[owner[result.job_id]])}: one job cannot be two images; this "
                    "image may have been charged and is not submitted again in this run"
                )
            # An answer whose recording was interrupted comes again (call_many): record it again, but
            # count it once.
            first_time = index not in handled
            handled.add(index)
            if isinstance(result, HitPawError):
                jobs[index] = _error_dict(result)
                if first_time and _api.submission_ended_maybe_charged(type(result).__name__):
                    # An answer refused for its job id still named the price HitPaw charged.
                    price = None if isinstance(answered, HitPawError) else answered.consume_coins
                    ledger.answer_lost(key, made_for=shown_as[key], charged=price)
                if isinstance(result, BATCH_STOPPING_ERRORS):
                    stopping.append(result)
            else:
                jobs[index] = result.job_id
                ledger.submitted(
                    key, result.job_id, result.consume_coins, made_for=shown_as[key], lost=result.resent
                )
                created[result.job_id] = result.consume_coins
                self._submitted_at.setdefault(result.job_id, round(time.time(), 1))
                if first_time:
                    _metrics.count_submitted(result.consume_coins)
            if first_time:
                progress.report(isinstance(result, HitPawError))
            store.save_if_due(ledger)

        named: set[str] = set()

        def checkpoint() -> None:
            # Every paid job durable within FLUSH_SECONDS, whether answers come or not. When the task is
            # being stopped (Airflow kills it seconds later), first named in the log, then saved at once.
            if not self._stop.is_set():
                store.save_if_due(ledger)
                return
            fresh = {
                shown_as[unique[i]]: job
                for i, job in enumerate(jobs)
                if isinstance(job, str) and job in created and job not in named
            }
            if fresh:
                self.log.warning("Stopping; paid for so far: %s", _shown_jobs(fresh, limit=len(fresh)))
                named.update(fresh.values())
            if not store.write_failed:  # a store that is down would hold the stop past Airflow's kill
                store.save(ledger)

        try:
            hook.submit_segmentations(
                [url for _, url in to_submit],
                max_in_flight=self.max_in_flight,
                on_result=submitted,
                stop_on=lambda result: isinstance(result, BATCH_STOPPING_ERRORS),
                stop=self._stop,
                budget=budget,
                checkpoint=checkpoint,
            )
        finally:
            if not (self._stop.is_set() and store.write_failed):
                store.save(ledger)  # what was paid for stays findable, also when the task is stopped midway
            self._log_costs(created, len(to_submit))
        if budget is not None and budget.refused:
            self.log.warning(
                "The budget of %s coins stopped the batch: %s spent, %d image(s) not submitted",
                f"{budget.limit:,}",
                f"{budget.spent:,}",
                sum(isinstance(job, dict) and job.get("type") == "HitPawBudgetError" for job in jobs),
            )
        if self._stop.is_set() and not stopping:
            raise AirflowException(
                "The task was asked to stop while submitting; the jobs already paid for are in "
                + (store.where if store.durable(ledger) else "its XCom 'submitted_jobs' and log")
            )
        if stopping:
            # A bad key, no coins: the same for every image still to go, so the rest were not sent.
            stop = stopping[0]
            self.log.error("Submitting stopped at the first account-wide refusal: %s", stop)
            for index, job in enumerate(jobs):
                if isinstance(job, dict) and job.get("type") == "HitPawNotSentError":
                    jobs[index] = {**job, "message": f"not submitted: the batch stopped at {stop}"}
            if not any(isinstance(job, str) for job in jobs):
                raise stop
        return jobs

    def _reattach(
        self,
        hook: HitPawHook,
        unique: list[str],
        needed: set[str],
        ledger: Ledger,
        jobs: list[str | dict[str, Any] | None],
    ) -> None:
        """Wait again for the jobs the ledger holds where they can still end well; a job HitPaw forgot or
        that ended in ERROR may be submitted again (it was paid for, and is counted)."""
        reuse = [
            (index, job)
            for index, key in enumerate(unique)
            if key in needed and (job := ledger.live_job(key))
        ]
        if not reuse:
            return
        statuses = hook.get_task_statuses([job for _, job in reuse], max_in_flight=self.max_in_flight)
        for (index, job), status in zip(reuse, statuses, strict=True):
            if isinstance(status, HitPawError):
                if not _api.says_job_unknown(status):
                    raise status  # cannot tell whether the job lives: better fail the try than pay twice
                ledger.forgotten(unique[index], job)
            elif status.is_failed:
                ledger.ended(unique[index], job, completed=False)
            else:
                jobs[index] = job
        self.log.info(
            "%d of %d images wait for the jobs of an earlier try",
            sum(isinstance(j, str) for j in jobs),
            len(unique),
        )

    def _log_plan(self, inputs: _Inputs, to_submit: int, budget: Any) -> None:
        """What the run will cost at most, before any coin is spent."""
        from airflow_provider_hitpaw._api import COINS_PER_JOB

        kept = len(inputs.kept)
        price = budget.price if budget is not None else COINS_PER_JOB
        most = to_submit * price
        limit = f" (budget {budget.limit:,} coins)" if budget is not None else ""
        self.log.info(
            "%s kept, %s to submit, at most %s coins%s",
            f"{kept:,}",
            f"{to_submit:,}",
            f"{most:,}",
            limit,
        )

    def _log_costs(self, created: dict[str, int | None], attempted: int) -> None:
        if not attempted:
            return
        known = [c for c in created.values() if c is not None]
        unknown = f" ({len(created) - len(known)} of unknown cost)" if len(known) < len(created) else ""
        self.log.info(
            "%d of %d submissions created jobs: %s%s",
            len(created),
            attempted,
            coins_text(sum(known)),
            unknown,
        )

    def _wait_in_process(self, hook: HitPawHook, job_ids: list[str]) -> BatchEvent:
        """The blocking twin of the batch trigger: the same rule (:class:`BatchWatch`), the same event."""
        from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

        end_time = time.time() + self.timeout
        watch = BatchWatch(job_ids, self.poll_interval, end_time, start=time.time())
        polls: dict[Future[TaskStatus | HitPawError], tuple[str, float]] = {}

        def poll(job_id: str, budget: float) -> TaskStatus | HitPawError:
            try:
                return hook.get_task_status(job_id, timeout=max(1.0, budget))
            except HitPawError as err:
                return err

        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="hitpaw-poll") as pool:
            try:
                while (event := watch.event(time.time())) is None:
                    now = time.time()
                    for job_id in watch.take(now, self.max_in_flight - len(polls)):
                        polls[pool.submit(poll, job_id, end_time - now)] = (job_id, now)
                    next_due = watch.next_due()
                    full = len(polls) >= self.max_in_flight
                    wake = end_time if next_due is None or full else min(next_due, end_time)
                    done, _ = wait(polls, timeout=max(0.0, wake - time.time()), return_when=FIRST_COMPLETED)
                    for future in done:
                        job_id, started = polls.pop(future)
                        watch.absorb(job_id, future.result(), started)
            finally:
                for future in polls:
                    future.cancel()
        self.log.info("%d/%d completed, %d failed", watch.completed, watch.total, len(watch.failed))
        event.raise_if_stopped()
        return event

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, **carried: Any
    ) -> list[dict[str, Any]]:
        """Resume with what the submission found (``carried``: its inputs and jobs), rather than reading
        every source again: one may have changed or gone meanwhile, and the jobs were paid for."""
        if not isinstance(carried.get("jobs"), list):
            ti = context["ti"]
            pushed = ti.xcom_pull(task_ids=ti.task_id, key=SUBMISSION_XCOM_KEY, map_indexes=ti.map_index)
            if not isinstance(pushed, dict) or not isinstance(pushed.get("jobs"), list):
                raise fail_without_retry(
                    "The batch's job ids were lost on resuming; clear the task to run it again (images "
                    "already submitted are then paid for again)"
                )
            carried = pushed
        store, ledger = self._resumed_ledger(context, carried)
        try:
            outcome = BatchEvent.from_payload(event)
            outcome.raise_if_stopped()
        except HitPawError as err:
            raise self._failure(err, ledger, store) from err
        self._submitted_at = dict(carried.get("submitted_at") or {})
        judged = self._carried_inputs(carried)
        if judged is None:
            changed = HitPawInputsChangedError(
                f"{self._field} rendered to other inputs (or another order) on resuming than when "
                "submitting; nothing is kept by this try"
            )
            raise self._failure(changed, ledger, store) from None
        with self._hook() as hook:
            try:
                return self._finish(context, hook, judged, list(carried["jobs"]), outcome, ledger, store)
            except BaseException as err:
                raise self._failure(err, ledger, store) from err

    def _resumed_ledger(self, context: Context, carried: dict[str, Any]) -> tuple[LedgerStore, Ledger]:
        """The ledger as the submitting try left it: from its store, and from the XCom where the store
        may lack some of it (then saved again at once: a retry finds it after all)."""
        from airflow_provider_hitpaw._ledger import Ledger

        store = self._ledger_store(context)
        try:
            ledger = store.load()
        except HitPawError:
            if not isinstance(carried.get("ledger"), dict):
                raise
            ledger = Ledger()
        if isinstance(carried.get("ledger"), dict):
            ledger.apply(carried["ledger"])
            ledger.mark_all_changed()
        jobs = carried.get("jobs")
        judged = self._carried_inputs(carried) if isinstance(jobs, list) else None
        if isinstance(jobs, list) and judged is not None:
            # The jobs the submitting try carried are paid for, whatever the ledger lacks.
            known = ledger.job_ids()
            if len(judged.unique) == len(jobs):
                for key, job in zip(judged.unique, jobs, strict=True):
                    if isinstance(job, str) and job not in known:
                        ledger.submitted(key, job, None)
        store.save(ledger)
        return store, ledger

    def _carried_inputs(self, carried: dict[str, Any]) -> _Inputs | None:
        """The submitting try's inputs: from the carried digests and this task's rendered fields (or, as
        an earlier version carried them, verbatim)."""
        self._source_items = {}
        if isinstance(carried.get("inputs"), list):
            identities = carried.get("identities")
            if self.source_paths is not None and isinstance(identities, dict):
                self._source_items = {str(identity): str(item) for item, identity in identities.items()}
            return _Inputs.from_xcom(
                carried["inputs"],
                carried.get("rejected") or {},
                carried.get("identities"),
                carried.get("fingerprints"),
                carried.get("kept"),
                carried.get("own"),
                carried.get("uploaded"),
            )
        given = self.file_urls if self.source_paths is None else self.source_paths
        if not isinstance(given, list | tuple):
            return None
        items = [item.strip() if isinstance(item, str) else item for item in given]
        identity_of: dict[str, str] = {}
        for item in items:
            if self.source_paths is None:
                identity_of[str(item)] = str(item)
                continue
            from airflow_provider_hitpaw import storage

            try:
                identity = storage.input_identity(item, self.source_conn_id)
            except HitPawConfigurationError:
                continue
            identity_of[str(item)] = identity
            self._source_items.setdefault(identity, item)
        return _Inputs.from_carried(carried, [str(item) for item in items], identity_of)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A deferral that Airflow ended (its timeout, a trigger that failed) fails the task; by the one
        rule of :meth:`_failure`, without a retry where the retry could not find the jobs."""
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowException as err:
            if next_method != _deferral.FAIL_METHOD:
                raise
            ti = context["ti"]
            pushed = ti.xcom_pull(task_ids=ti.task_id, key=SUBMISSION_XCOM_KEY, map_indexes=ti.map_index)
            carried = pushed if isinstance(pushed, dict) else {}
            jobs = carried.get("jobs", [])
            paid = sum(isinstance(job, str) for job in jobs) if isinstance(jobs, list) else 0
            message = _deferral.deferral_failure(err, f"The batch's {paid} HitPaw jobs (already paid for)")
            store, ledger = self._resumed_ledger(context, carried)
            failure = self._failure(
                HitPawTimeoutError(f"{message}; a retry waits for the same jobs"), ledger, store
            )
            raise failure from err

    def _finish(
        self,
        context: Context,
        hook: HitPawHook,
        inputs: _Inputs,
        jobs: list[Any],
        outcome: BatchEvent,
        ledger: Ledger,
        store: LedgerStore,
    ) -> list[dict[str, Any]]:
        """One result per input, in input order, with the result URLs of the completed jobs; what each
        input cost is read from the ledger."""
        failed, pending = outcome.failed, set(outcome.pending)
        unreadable: dict[str, str] = dict(getattr(outcome, "unreadable", None) or {})
        ended = set(failed) | pending | set(unreadable)
        done = [job for job in jobs if isinstance(job, str) and job not in ended]
        statuses = dict(
            zip(done, hook.get_task_statuses(done, max_in_flight=self.max_in_flight), strict=True)
        )
        shown_as = inputs.representative()
        by_key: dict[str, dict[str, Any]] = {}
        for key, job in zip(inputs.unique, jobs, strict=True):
            status = statuses.get(job) if isinstance(job, str) else None
            result = _result(shown_as[key], job, failed, pending, status)
            if isinstance(job, str) and job in unreadable:
                # A poll that failed is not a job that failed: the ledger keeps the job for a retry.
                kind, _, text = unreadable[job].partition(": ")
                known = kind.isidentifier() and kind.startswith("HitPaw")
                said = text if known else unreadable[job]
                result.update(
                    status="UNKNOWN",
                    error={
                        "type": kind if known else "HitPawError",
                        "code": None,
                        "message": f"the job's status could not be read: {said}",
                    },
                )
            refusal = self._answered_for_another(job, key, status, inputs)
            if refusal is not None:
                result.update(res_url=None, mask_url=None, error=_error_dict(refusal))
            if isinstance(job, str):
                if result["status"] == "COMPLETED":
                    ledger.ended(key, job, completed=True)
                elif result["status"] == "ERROR":
                    ledger.ended(key, job, completed=False)
            if self.source_paths is not None:
                # The input was a file; HitPaw fetched its uploaded copy (the job's original_url).
                result["file_url"] = getattr(status, "original_url", None)
            by_key[key] = {**result, "reused": False}
        by_input: dict[str, dict[str, Any]] = {}
        for identity in inputs.identities:
            if identity in inputs.kept:
                url = None if self.source_paths is not None else identity
                by_input[identity] = {"file_url": url, **inputs.kept[identity], "error": None}
                if identity in inputs.own:
                    by_input[identity]["reused"] = False
            else:
                by_input[identity] = dict(by_key[inputs.key_of(identity)])
        if self.output_path is not None:
            self._keep_results(hook, inputs, by_input, ledger, store)
        gone = self._price_results(inputs, by_input, ledger)
        self._count_ends(inputs, by_input, ledger)
        store.save(ledger)
        results = []
        shown: set[str] = set()
        for item in inputs.given:
            if item in inputs.identity_of:
                identity = inputs.identity_of[item]
                result = dict(by_input[identity])
                if identity in shown:  # an input given twice: what it cost, on its first result only
                    if result.get("consume_coins"):
                        result["consume_coins"] = 0
                    result.pop("maybe_charged", None)
                shown.add(identity)
            else:
                result = _refused(item, inputs.rejected[item])
                if self.source_paths is not None:  # refused before upload: there is no URL
                    result["file_url"] = None
            if self.source_paths is not None:
                result["source_path"] = item
            results.append(_api.without_credentials(result))
        self._price_refused(inputs, results, gone)
        self._write_contact_sheet(context, results)
        return self._report(context, results, ledger, store)

    def _write_contact_sheet(self, context: Context, results: list[dict[str, Any]]) -> None:
        """Pages of the results for a person to look at, beside them; never a reason to fail a paid batch."""
        if self.output_path is None or not self.contact_sheet:
            return
        try:
            import PIL  # noqa: F401  (the [finish] extra)
        except ImportError:
            self.log.info("No contact sheet: it needs Pillow (pip install 'airflow-provider-hitpaw[finish]')")
            return
        from airflow_provider_hitpaw import _contact_sheet, storage
        from airflow_provider_hitpaw._names import safe_segment
        from airflow_provider_hitpaw._results import push_links
        from airflow_provider_hitpaw.links import storage_address

        folder = storage.as_storage_path(self.output_path, self.output_conn_id, field="output_path")
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        task = f"{ti.task_id}-{map_index}" if isinstance(map_index, int) and map_index >= 0 else ti.task_id
        where = folder / _CONTACT_SHEETS
        for part in (ti.dag_id, task, getattr(ti, "run_id", None) or "run"):
            where = where / (safe_segment([str(part)], strip_extension=False) or "_")
        try:
            # What this run kept: a night that pays nothing reads nothing back for a sheet of old news.
            fresh = [result for result in results if not result.get("reused")]
            entries = _contact_sheet.sheet_entries(fresh, *self._sheet_readers())
            written = []
            for number, page in enumerate(_contact_sheet.pages(entries), start=1):
                target = where / f"page-{number:03d}.jpg"
                if storage.is_local(target):
                    where.mkdir(parents=True, exist_ok=True)
                target.fs.pipe_file(str(target.path), page)
                written.append(storage.storage_uri(target))
        except Exception as err:  # the results are kept and paid for: a sheet is a convenience
            self.log.warning("The contact sheet could not be written (%s)", storage.store_words(err))
            return
        if written:
            self.log.info("Contact sheet: %d page(s), the first at %s", len(written), written[0])
            fs = getattr(folder, "fs", None)
            push_links(
                context,
                {"folder": _folder_link(folder), "contact_sheet": storage_address(written[0], fs)},
            )

    def _sheet_readers(self) -> tuple[Any, Any]:
        """What a sheet shows is read through the output's connection (kept files) and the sources'
        (inputs as given, each with its own connection), at most a few MB each."""
        from airflow_provider_hitpaw import storage

        def capped(opener: Any) -> bytes | None:
            try:
                with opener() as stream:
                    data = stream.read(_SHEET_READ_BYTES + 1)
            except Exception:  # a panel that cannot be read is drawn grey
                return None
            return data if len(data) <= _SHEET_READ_BYTES else None

        output = self._output()

        def kept(uri: str) -> bytes | None:
            return capped(lambda: output.kept_path(uri).open("rb"))

        def source(item: str) -> bytes | None:
            given = next((v for v in self._source_items.values() if str(v) == item), item)
            return capped(lambda: storage.open_source(given, conn_id=self.source_conn_id))

        return kept, source

    def _answered_for_another(
        self, job: Any, key: str, status: Any, inputs: _Inputs
    ) -> HitPawUntrustedAnswerError | None:
        """A completed job is this input's only if its ``original_url`` names what was submitted for it:
        the URL, or the upload (unknown when an earlier try uploaded: then it is not checked)."""
        if not isinstance(job, str) or not getattr(status, "is_completed", False):
            return None
        submitted = key if self.source_paths is None else inputs.uploaded.get(key)
        if submitted is None:
            return None
        from airflow_provider_hitpaw import storage

        try:
            storage.check_answered_for(job, status.original_url, submitted)
        except HitPawUntrustedAnswerError as err:
            return err
        return None

    def _price_results(
        self, inputs: _Inputs, by_input: dict[str, dict[str, Any]], ledger: Ledger
    ) -> dict[str | None, int | None]:
        """Each key's coins on the first of its inputs (the others 0, with the same job), as this run
        paid them: every job of the key (an ERROR retried included), and what an earlier try paid for
        an input since edited; reused pairs cost nothing. So the results add up to what HitPaw charged."""
        from airflow_provider_hitpaw._ledger import digest

        gone = ledger.paid_for_gone_keys(inputs.unique)
        priced: set[str] = set()
        for identity in inputs.identities:
            result = by_input[identity]
            key = inputs.key_of(identity)
            if result.get("reused") or key in priced:
                coins: int | None = 0
            else:
                priced.add(key)
                coins = ledger.coins_paid(key)
                if ledger.maybe_charged(key):
                    result["maybe_charged"] = ledger.maybe_charged(key)
            if digest(identity) in gone:
                earlier = gone.pop(digest(identity))
                coins = None if coins is None or earlier is None else coins + earlier
            result["consume_coins"] = coins
        return gone

    def _price_refused(
        self, inputs: _Inputs, results: list[dict[str, Any]], gone: dict[str | None, int | None]
    ) -> None:
        """What earlier tries of this run paid for an input this try refused (its own files under
        ``fail``, an edited source) is reported with it; what no input is left to carry, in the log."""
        from airflow_provider_hitpaw._ledger import digest

        for item, result in zip(inputs.given, results, strict=True):
            identity = inputs.refused_identity.get(item)
            if identity is not None and digest(identity) in gone:
                result["consume_coins"] = gone.pop(digest(identity))
        if gone:
            self.log.warning(
                "Earlier tries of this run also paid for %d input(s) that are no longer in the batch: %s",
                len(gone),
                coins_text(sum(c or 0 for c in gone.values())),
            )

    def _count_ends(self, inputs: _Inputs, by_input: dict[str, dict[str, Any]], ledger: Ledger) -> None:
        """Count, once per clearing, the jobs this try finishes with: completed (with every input's
        results kept where asked) or failed. A completed job whose results could not be kept is left to
        the retry that keeps them."""
        results_of: dict[str, list[dict[str, Any]]] = {}
        for identity, result in by_input.items():
            if isinstance(result.get("job_id"), str) and not result.get("reused"):
                results_of.setdefault(inputs.key_of(identity), []).append(result)
        completed = failed = 0
        durations: list[float] = []
        now = time.time()
        for key, results in results_of.items():
            entry = ledger.entry(key)
            if entry is None or entry.job_id is None or entry.counted or entry.job_id != results[0]["job_id"]:
                continue
            if results[0]["status"] == "COMPLETED" and not any(r.get("error") for r in results):
                completed += 1
            elif results[0]["status"] == "ERROR":
                failed += 1
            else:
                continue
            seconds = _metrics.seconds_since(self._submitted_at.get(entry.job_id), now)
            if seconds is not None:
                durations.append(seconds)
            ledger.count(key)
        _metrics.count_ended(completed=completed, failed=failed, durations=durations)

    def _push_folder_link(self, context: Context) -> None:
        from airflow_provider_hitpaw import storage
        from airflow_provider_hitpaw._results import push_links
        from airflow_provider_hitpaw.links import folder_address

        if self.output_path is None:
            push_links(context, {})
            return
        try:
            folder = storage.as_storage_path(self.output_path, self.output_conn_id)
        except HitPawError:
            push_links(context, {})  # the output is judged (and refused) with the inputs, before paying
            return
        push_links(context, {"folder": folder_address(folder)})

    def _keep_results(
        self,
        hook: HitPawHook,
        inputs: _Inputs,
        by_input: dict[str, dict[str, Any]],
        ledger: Ledger,
        store: LedgerStore,
    ) -> None:
        """Copy every completed image's files to ``output_path``, ``max_in_flight`` at a time, on the worker.
        A copy that fails marks its image as failed; the others are kept, and the ledger says so."""
        from concurrent.futures import ThreadPoolExecutor

        from airflow_provider_hitpaw import storage

        output = self._output()
        persisted: set[str] = set()
        read_source = self._sheet_readers()[1]

        def keep(item: tuple[str, dict[str, Any]]) -> None:
            source, result = item
            try:
                if source not in inputs.kept:
                    result.update(
                        storage.persist_job_results(
                            result,
                            source,
                            self.output_path,
                            hook=hook,
                            overwrite=self.overwrite,
                            conn_id=self.output_conn_id,
                            fingerprint=inputs.fingerprints.get(source),
                            layout=output.layout,
                        )
                    )
                    persisted.add(source)
                given = self._source_items.get(source)
                original = (lambda: read_source(str(given))) if given is not None else None
                result.update(made_from_kept(output, result, original))
            except Exception as err:  # a storage error (permissions, credentials) is this image's alone
                failure = err if isinstance(err, HitPawError) else HitPawError(f"{type(err).__name__}: {err}")
                result["error"] = {
                    k: v for k, v in _error_dict(failure).items() if k in ("type", "code", "message")
                }
                return
            if result.get("suspect") and self.suspects == "fail":
                result["error"] = {
                    "type": "HitPawSuspectCutoutError",
                    "code": None,
                    "message": f"the cut-out looks wrong: {result['suspect']}",
                }

        completed = [
            (source, r) for source, r in by_input.items() if r["status"] == "COMPLETED" and not r.get("error")
        ]
        kept: list[str] = []
        with ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="hitpaw-keep") as pool:
            # As each pair lands, the ledger says so (saved every few seconds): a crash midway leaves a
            # retry knowing which files are this run's own.
            for (source, _), _ in zip(completed, pool.map(keep, completed), strict=True):
                if source in persisted:
                    kept.append(source)
                    ledger.kept(inputs.key_of(source), source)
                    store.save_if_due(ledger)
        suspects = sum(1 for _, result in completed if result.get("suspect"))
        if suspects:
            _metrics.count_suspects(suspects)
            self.log.warning("%d cut-out(s) look wrong (see each result's 'suspect')", suspects)
        self.log.info("Kept %d cut-outs and masks in %s", len(kept), _shown(self.output_path))
        if len(inputs.kept) > len(inputs.own):
            self.log.info(
                "%d were kept there by an earlier run and reused", len(inputs.kept) - len(inputs.own)
            )
        if inputs.own:
            self.log.info("%d were kept there by an earlier try of this run", len(inputs.own))

    def _log_failures(self, bad: list[dict[str, Any]]) -> None:
        """Why the failures failed, once, by kind (not one line per image), with an example of each."""
        kinds: dict[str, list[dict[str, Any]]] = {}
        for result in bad:
            kinds.setdefault(_kind(result), []).append(result)
        for kind, members in sorted(kinds.items(), key=lambda item: -len(item[1])):
            example = members[0]
            shown = _shown(example.get("source_path") or example["file_url"])
            reason = (example.get("error") or {}).get("message") or example["status"]
            self.log.warning(
                "%d image(s) failed with %s, for instance %s: %s", len(members), kind, shown, reason
            )

    def _report(
        self, context: Context, results: list[dict[str, Any]], ledger: Ledger, store: LedgerStore
    ) -> list[dict[str, Any]]:
        bad = [r for r in results if r["status"] != "COMPLETED" or r["error"]]
        known = sum(r["consume_coins"] for r in results if isinstance(r.get("consume_coins"), int))
        lost = sum(entry.lost for entry in ledger.entries.values())
        unknown = sum(1 for e in ledger.entries.values() if e.job_id is not None and e.coins is None)
        self.log.info(
            "Batch done: %d/%d completed, %d not; %s%s%s",
            len(results) - len(bad),
            len(results),
            len(bad),
            coins_text(known),
            f", and {lost} submission(s) whose answer was lost may have been charged" if lost else "",
            f", and {unknown} job(s) whose price HitPaw did not name" if unknown else "",
        )
        self._log_failures(bad)
        if not bad or not self.fail_on_error or len(bad) <= self._allowed_failures(len(results)):
            return results
        context["ti"].xcom_push(key=RESULTS_XCOM_KEY, value=results)
        shown = "; ".join(f"{_shown(r.get('source_path') or r['file_url'])}: {r['status']}" for r in bad[:5])
        message = (
            f"{len(bad)} of {len(results)} images were not segmented ({shown}); the per-image results are "
            f"in XCom under {RESULTS_XCOM_KEY!r}"
        )
        raise self._failure(AirflowException(message), ledger, store)


def _kind(result: dict[str, Any]) -> str:
    error = result.get("error") or {}
    return str(error.get("type") or result["status"])


def _result(
    item: str, job: Any, failed: dict[str, str], pending: set[str], status: TaskStatus | HitPawError | None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "file_url": item,
        "job_id": None,
        "status": NOT_SUBMITTED,
        "consume_coins": None,
        "res_url": None,
        "mask_url": None,
        "error": None,
    }
    if isinstance(job, dict):
        result["error"] = {k: job.get(k) for k in ("type", "code", "message")}
        return result
    if job is None:
        return result
    result["job_id"] = job
    if job in failed:
        result.update(
            status="ERROR",
            error={
                "type": "HitPawJobFailedError",
                "code": None,
                "message": HitPawJobFailedError.describe(job, _api.url_without_query(item)),
            },
        )
    elif job in pending:
        result.update(
            status="CONVERTING",
            error={"type": "HitPawTimeoutError", "code": None, "message": "still open at the deadline"},
        )
    elif isinstance(status, HitPawError):
        result.update(status="UNKNOWN", error=_error_dict(status))
    elif status is not None:
        result.update(status=status.status, res_url=status.res_url, mask_url=status.mask_url)
    return result


def _shown(item: Any) -> str:
    """An input as a message shows it: a URL without its query (a signature) or its credentials."""
    return _api.url_without_query(str(item)) if "://" in str(item) else str(item)


def _words(err: BaseException) -> str:
    """An error as a task failure shows it: a HitPaw error's own text, anything else with its type."""
    return str(err) if isinstance(err, HitPawError) else f"{type(err).__name__}: {err}"


def _without_credentials(paid: dict[str, str]) -> dict[str, str]:
    return {_shown(item): job for item, job in paid.items()}


def _shown_jobs(paid: dict[str, str], limit: int = 20) -> str:
    shown = ", ".join(
        f"{_api.url_without_query(item)} -> {job!r}" for item, job in list(paid.items())[:limit]
    )
    return shown + (f", ... ({len(paid) - limit} more)" if len(paid) > limit else "")


def _refused(item: str, reason: str) -> dict[str, Any]:
    result = _result(item, None, {}, set(), None)
    result["error"] = {"type": "HitPawConfigurationError", "code": None, "message": reason}
    return result


def _error_dict(err: HitPawError) -> dict[str, Any]:
    return {"type": type(err).__name__, "code": err.code, "http_status": err.http_status, "message": str(err)}


class _SubmitProgress:
    def __init__(self, log: Any, total: int) -> None:
        self._log, self._total = log, total
        self._done = self._failed = 0
        self._step = max(1, total // 10)

    def report(self, failed: bool) -> None:
        self._done += 1
        self._failed += failed
        if self._done % self._step == 0 or self._done == self._total:
            self._log.info("Submitted %d/%d images, %d refused", self._done, self._total, self._failed)


__all__ = ["NOT_SUBMITTED", "Outcome", "SegmentImageBatchOperator"]
