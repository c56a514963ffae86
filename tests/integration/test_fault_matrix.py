"""The fault matrix (``fault_scenarios.SCENARIOS``) through the provider's real operator, hooks and trigger,
against the emulator's fault injection.

Transient faults: the task completes. Permanent ones: it fails with ``AirflowFailException`` carrying
HitPaw's code and message, without retries. Always: one job per image, and a trigger that ran sent
exactly one event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_hitpaw.exceptions import (
    HitPawConfigurationError,
    HitPawError,
    HitPawSubmissionUnknownError,
)
from tests.integration.fault_scenarios import (
    SCENARIOS,
    STATUS,
    SUBMIT,
    FaultScenario,
    Observation,
    Path,
    run_scenario,
)

if TYPE_CHECKING:
    from airflow_provider_hitpaw.emulator.pytest_plugin import HitPawEmulatorHandle


def _cases() -> list[Any]:
    return [
        pytest.param(scenario, group, id=f"{scenario.name}-{'+'.join(group)}")
        for scenario in SCENARIOS
        for group in scenario.path_groups()
    ]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("scenario", "paths"), _cases())
def test_fault_matrix(
    hitpaw_emulator: HitPawEmulatorHandle, scenario: FaultScenario, paths: tuple[Path, ...]
) -> None:
    observed = run_scenario(hitpaw_emulator, scenario, paths)

    assert set(observed.paths) == set(paths)
    for path, result in observed.paths.items():
        assert result.outcome == scenario.expected, f"{path}: {result.error!r}"
    _assert_no_duplicate_submission(scenario, observed)
    _assert_one_event_per_trigger(scenario, observed)
    if scenario.kind == "transient":
        _assert_transient(scenario, observed)
    elif scenario.kind == "lost":
        _assert_lost(observed)
    else:
        _assert_permanent(scenario, observed)


def _assert_lost(observed: Observation) -> None:
    """Two lost answers to one submission: sent twice, never a third time, the task fails for good and
    says that HitPaw may have charged."""
    for result in observed.paths.values():
        assert isinstance(result.error, AirflowFailException)
        assert isinstance(result.cause, HitPawSubmissionUnknownError)
        assert "may have accepted" in str(result.error)
        assert not result.deferred
    assert observed.requests_to(SUBMIT) == 2 * len(observed.paths)
    assert len(observed.retries) == len(observed.paths), "exactly one resubmission per path"


def _assert_no_duplicate_submission(scenario: FaultScenario, observed: Observation) -> None:
    per_image = observed.jobs_per_image
    if scenario.refused_field is not None or scenario.fails_at_submission:
        assert per_image == {}, "a refused submission must not create a job"
        return
    assert per_image == {result.file_url: 1 for result in observed.paths.values()}
    # Faults that replace a submission are retried; exactly one submission got through per path.
    submit_faults = sum(_first_n(spec) for spec in scenario.faults if f"paths={SUBMIT}" in spec)
    assert observed.requests_to(SUBMIT) == len(observed.paths) + submit_faults


def _assert_one_event_per_trigger(scenario: FaultScenario, observed: Observation) -> None:
    for path, result in observed.paths.items():
        if path == "operator":
            assert result.events is None
            assert not result.deferred
        elif scenario.fails_at_submission:
            assert not result.deferred, "a task that failed at submission must not defer"
        else:
            assert result.deferred
            assert result.events is not None
            assert len(result.events) == 1, result.events


def _assert_transient(scenario: FaultScenario, observed: Observation) -> None:
    for result in observed.paths.values():
        assert result.result is not None
        assert result.result["status"] == "COMPLETED"
        assert result.result["res_url"]
        assert result.result["mask_url"]
        assert result.result["file_url"] == result.file_url
        assert result.result["consume_coins"] == 20
        if result.events is not None:
            assert result.events[0]["status"] == "success"
    # Every fault the scenario sets up was really served (the rules' first_n used up).
    expected = scenario.fault_counts()
    served = {kind: n for kind, n in observed.state["faults_served"].items() if n}
    assert served == dict(expected)
    # Each delay a retry asked for was waited (through the hooks' pause), and follows the policy.
    for record in observed.retries:
        assert record.delay in observed.pauses
        _assert_delay_follows_policy(observed, record.attempt, record.delay, record.retry_after)
    if scenario.name.startswith("unknown status"):
        # An undocumented status is not an error: no retry at all, the wait simply goes on.
        assert observed.retries == []
        assert observed.requests_to(STATUS) > scenario.fault_counts()["unknown_status"]
    elif scenario.outage_seconds:
        assert observed.seconds >= scenario.outage_seconds
        assert {r.error for r in observed.retries} == {"HitPawConnectionError"}
        assert all(result.seconds >= scenario.outage_seconds for result in observed.paths.values())
    else:
        assert observed.retries, "a transient fault must be retried"
    if scenario.retry_after is not None:
        rate_limited = [r for r in observed.retries if r.error == "HitPawRateLimitError"]
        assert len(rate_limited) == sum(scenario.fault_counts().values())
        assert all(r.retry_after == scenario.retry_after for r in rate_limited)
        assert all(r.delay >= scenario.retry_after for r in rate_limited)
    elif "429" in scenario.fault_counts():
        # Without Retry-After, the back-off grows: the third retry of a call waits longer than the first.
        by_attempt = {r.attempt: r.delay for r in observed.retries if r.error == "HitPawRateLimitError"}
        assert by_attempt[1] < by_attempt[3]


def _assert_delay_follows_policy(
    observed: Observation, attempt: int, delay: float, retry_after: float | None
) -> None:
    policy = observed.policy
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
    low, high = ceiling / 2, ceiling
    if retry_after is not None:
        floor = min(retry_after, policy.max_delay)
        low, high = max(low, floor), max(high, floor)
    assert low <= delay <= high, (attempt, delay, retry_after)


def _assert_permanent(scenario: FaultScenario, observed: Observation) -> None:
    for result in observed.paths.values():
        assert isinstance(result.error, AirflowFailException)
        cause = result.cause
        if scenario.refused_field is not None:
            assert isinstance(cause, HitPawConfigurationError)
            assert cause.field == scenario.refused_field
            assert scenario.refused_field in str(result.error)
            continue
        assert isinstance(cause, HitPawError)
        assert cause.code == scenario.code
        assert f"code {scenario.code}" in str(result.error)
        assert scenario.message is not None
        assert scenario.message in str(result.error)
        if result.events is not None:
            event = result.events[0]
            assert event["status"] == "error"
            assert event["code"] == scenario.code
    # Permanent: never retried.
    assert observed.retries == []
    if scenario.refused_field is not None:
        assert observed.requests == 0, "bad input must fail before anything is sent"
    elif scenario.fails_at_submission:
        assert observed.requests == len(observed.paths)
    else:
        # Submitted, then exactly one refused poll per path.
        assert observed.requests_to(SUBMIT) == len(observed.paths)
    assert observed.state["coins"] == _coins_left(scenario, observed)


def _coins_left(scenario: FaultScenario, observed: Observation) -> int:
    start = scenario.coins if scenario.coins is not None else 100_000
    return start - 20 * sum(observed.jobs_per_image.values())


def _first_n(spec: str) -> int:
    params = dict(p.split("=", 1) for p in spec.partition(":")[2].split(",") if "=" in p)
    return int(params.get("first_n", 0))


def test_every_kind_of_fault_the_brief_names_is_in_the_matrix() -> None:
    kinds = {spec.partition(":")[0] for scenario in SCENARIOS for spec in scenario.faults}
    assert kinds >= {
        "500",
        "429",
        "drop",
        "slow",
        "non_json",
        "503_html",
        "truncated_json",
        "code_under_200",
        "unknown_status",
        "missing_fields",
    }
    assert any(s.outage_seconds for s in SCENARIOS)
    assert {s.code for s in SCENARIOS if s.kind == "permanent"} >= {110400000, 110402000, 100401000}
    assert any(s.refused_field == "file_url" for s in SCENARIOS)
