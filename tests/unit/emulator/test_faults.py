"""The fault rule model: parsing the --fault syntax and JSON, and which request gets which fault."""

from __future__ import annotations

import pytest

from airflow_provider_hitpaw.emulator.faults import (
    FAULT_KINDS,
    FaultInjector,
    FaultRule,
    FaultSpecError,
    fault_help,
    parse_fault_rules,
    parse_fault_spec,
)


def test_parse_cli_examples() -> None:
    assert parse_fault_spec("500:first_n=3") == FaultRule(kind="500", first_n=3)
    assert parse_fault_spec("429:share=0.2,retry_after=1") == FaultRule(kind="429", share=0.2, retry_after=1)
    assert parse_fault_spec("slow:first_n=2,delay_s=5,paths=/api/task-status") == FaultRule(
        kind="slow", first_n=2, delay_s=5, paths=("/api/task-status",)
    )
    assert parse_fault_spec("drop") == FaultRule(kind="drop")
    assert parse_fault_spec("drop:first_n=1,after_commit=true").after_commit


def test_parse_several_paths() -> None:
    expected = ("/api/task-status", "/api/image-segmentation")
    assert parse_fault_spec("500:paths=/api/task-status|/api/image-segmentation").paths == expected
    assert parse_fault_spec("500:paths=/api/task-status,/api/image-segmentation,first_n=1").paths == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("teapot", "unknown fault kind"),
        ("500:first_n=1,share=0.5", "not both"),
        ("500:share=1.5", "between 0 and 1"),
        ("500:first_n=-1", ">= 0"),
        ("500:first_n=x", "integer"),
        ("slow", "delay_s"),
        ("429:after_commit=true", "after_commit"),
        ("500:colour=red", "unknown fault rule keys"),
        ("500:first_n", "key=value"),
        ("500:paths=api", "start with '/'"),
        ("500:first_n=1,first_n=2", "twice"),
        ("500:after_commit=maybe", "true or false"),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        parse_fault_spec(spec)


def test_json_rules_round_trip() -> None:
    rules = parse_fault_rules(
        [{"kind": "429", "share": 0.5, "retry_after": 2, "paths": ["/api/task-status"]}, "500:first_n=1"]
    )
    assert [r.kind for r in rules] == ["429", "500"]
    again = parse_fault_rules({"rules": [r.to_dict() for r in rules]})
    assert again == rules
    with pytest.raises(FaultSpecError):
        parse_fault_rules({"kind": "500"})
    with pytest.raises(FaultSpecError):
        parse_fault_rules([["500"]])


def test_first_n_then_stops() -> None:
    injector = FaultInjector([FaultRule(kind="500", first_n=2)])
    picks = [injector.pick("/api/task-status") for _ in range(4)]
    assert [p.kind if p else None for p in picks] == ["500", "500", None, None]
    assert injector.served == {"500": 2}


def test_default_paths_are_the_api_only() -> None:
    injector = FaultInjector([FaultRule(kind="500")])
    assert injector.pick("/samples/shoe.jpg") is None
    assert injector.pick("/results/x/mask.png") is None
    assert injector.pick("/api/oss/presign-put") is not None


def test_explicit_paths_and_prefixes() -> None:
    injector = FaultInjector([FaultRule(kind="500", paths=("/api/task-status", "/results/*"))])
    assert injector.pick("/api/image-segmentation") is None
    assert injector.pick("/api/task-status") is not None
    assert injector.pick("/results/abc/cutout.png") is not None


def test_unknown_status_only_on_task_status() -> None:
    injector = FaultInjector([FaultRule(kind="unknown_status")])
    assert injector.pick("/api/image-segmentation") is None
    assert injector.pick("/api/task-status") is not None


def test_share_is_reproducible_for_a_seed() -> None:
    def run(seed: int) -> list[bool]:
        injector = FaultInjector([FaultRule(kind="429", share=0.3)], seed=seed)
        return [injector.pick("/api/task-status") is not None for _ in range(300)]

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert 60 < sum(first) < 120


def test_set_rules_restarts_the_random_source() -> None:
    injector = FaultInjector([FaultRule(kind="500", share=0.5)], seed=3)
    a = [injector.pick("/api/x") is not None for _ in range(50)]
    injector.set_rules([FaultRule(kind="500", share=0.5)])
    assert a == [injector.pick("/api/x") is not None for _ in range(50)]


def test_first_matching_rule_wins_and_later_ones_count_only_what_they_see() -> None:
    injector = FaultInjector([FaultRule(kind="500", first_n=1), FaultRule(kind="429", first_n=1)])
    kinds = [getattr(injector.pick("/api/task-status"), "kind", None) for _ in range(3)]
    assert kinds == ["500", "429", None]


def test_set_rules_copies_and_resets_counters() -> None:
    rule = FaultRule(kind="500", first_n=1)
    injector = FaultInjector([rule])
    injector.pick("/api/x")
    assert rule.fired == 0  # the caller's object is untouched
    injector.set_rules([rule])
    assert injector.pick("/api/x") is not None


def test_help_mentions_every_kind() -> None:
    text = fault_help()
    for kind in FAULT_KINDS:
        assert kind in text
    assert "first_n" in text
    assert "share" in text
