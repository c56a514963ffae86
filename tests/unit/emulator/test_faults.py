"""The fault rule model: parsing the --fault syntax and JSON, and which request gets which fault."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_hitpaw.emulator.faults import (
    FAULT_KINDS,
    NO_VALUE,
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


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "redirect:location=http://127.0.0.1:1/x?a=1,paths=/results/*",
            FaultRule(kind="redirect", location="http://127.0.0.1:1/x?a=1", paths=("/results/*",)),
        ),
        ('redirect:location="/a,b"', FaultRule(kind="redirect", location="/a,b")),
        ("endless", FaultRule(kind="endless")),
        (
            "endless:size_bytes=1000,paths=/results/*",
            FaultRule(kind="endless", size_bytes=1000, paths=("/results/*",)),
        ),
        ("gzip_bomb:first_n=1", FaultRule(kind="gzip_bomb", first_n=1)),
        (
            "drip:delay_s=5,paths=/api/task-status",
            FaultRule(kind="drip", delay_s=5, paths=("/api/task-status",)),
        ),
        ("drip:delay_s=0.1,size_bytes=3", FaultRule(kind="drip", delay_s=0.1, size_bytes=3)),
        ("png_then_html", FaultRule(kind="png_then_html")),
        ('odd_coins:value="20"', FaultRule(kind="odd_coins", value="20")),
        ("odd_coins:value=-5", FaultRule(kind="odd_coins", value=-5)),
        ("odd_coins:value=1e300", FaultRule(kind="odd_coins", value=1e300)),
        ("odd_coins:value=true", FaultRule(kind="odd_coins", value=True)),
        ("odd_coins:value=null", FaultRule(kind="odd_coins", value=None)),
        ('odd_coins:value="__missing__"', FaultRule(kind="odd_coins", value="__missing__")),
        (
            'bad_job_id:value="a,b\\n\\u001b[31m\\"",share=0.5',
            FaultRule(kind="bad_job_id", value='a,b\n\x1b[31m"', share=0.5),
        ),
        ('bad_job_id:value=["x"]', FaultRule(kind="bad_job_id", value=["x"])),
        ("same_job_id", FaultRule(kind="same_job_id")),
        ("huge_json:size_bytes=4294967296", FaultRule(kind="huge_json", size_bytes=4 * 1024**3)),
    ],
)
def test_parse_hostile_kinds(spec: str, expected: FaultRule) -> None:
    rule = parse_fault_spec(spec)
    assert rule == expected
    assert FaultRule.from_dict(rule.to_dict()) == rule  # the JSON form says the same
    assert parse_fault_rules([rule.to_dict()]) == [rule]


def test_null_is_a_value_and_absent_is_none() -> None:
    assert FaultRule.from_dict({"kind": "odd_coins", "value": None}).value is None
    assert FaultRule(kind="endless").value is NO_VALUE
    assert "value" not in FaultRule(kind="endless").to_dict()
    assert FaultRule(kind="odd_coins", value=None).to_dict()["value"] is None
    with pytest.raises(FaultSpecError, match="need a value"):
        FaultRule.from_dict({"kind": "odd_coins"})
    with pytest.raises(FaultSpecError, match="JSON value"):
        FaultRule(kind="odd_coins", value=object())


def test_sizes_default_and_bound() -> None:
    assert FaultRule(kind="endless").stream_bytes == 300 * 1024**2
    assert FaultRule(kind="huge_json", size_bytes=5).stream_bytes == 5
    assert FaultRule(kind="gzip_bomb").bomb_bytes == 1024**3


def test_submission_kinds_only_touch_submissions() -> None:
    for kind, extra in (("odd_coins", {"value": 1}), ("bad_job_id", {"value": "x"}), ("same_job_id", {})):
        injector = FaultInjector([FaultRule(kind=kind, paths=("/api/*",), **extra)])
        assert injector.pick("/api/task-status") is None
        assert injector.pick("/api/oss/presign-put") is None
        assert injector.pick("/api/image-segmentation") is not None


def test_png_then_html_defaults_to_results() -> None:
    injector = FaultInjector([FaultRule(kind="png_then_html")])
    assert injector.pick("/api/task-status") is None
    assert injector.pick("/results/a/cutout.png") is not None
    injector = FaultInjector([FaultRule(kind="png_then_html", paths=("/samples/*",))])
    assert injector.pick("/results/a/cutout.png") is None
    assert injector.pick("/samples/shoe.jpg") is not None


def test_set_rules_forgets_the_first_job_id() -> None:
    injector = FaultInjector([FaultRule(kind="same_job_id")])
    rule = injector.pick("/api/image-segmentation")
    assert rule is not None
    rule.first_job_id = "abc"
    injector.set_rules(injector.rules)
    assert injector.rules[0].first_job_id is None


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
        ("redirect", "needs a location"),
        ("500:location=/x", "only it takes one"),
        ("redirect:location=", "non-empty"),
        ('redirect:location="/a\\r\\nSet-Cookie: x"', "control characters"),
        ("500:size_bytes=10", "size_bytes only applies"),
        ("endless:size_bytes=0", "from 1 to"),
        ("huge_json:size_bytes=4294967297", "from 1 to"),
        ("endless:size_bytes=ten", "integer"),
        ("odd_coins", "need a value"),
        ("500:value=1", "need a value"),
        ("odd_coins:value=abc", "written as JSON"),
        ('bad_job_id:value="unterminated', "unterminated"),
        ("drip", "delay_s"),
        ("same_job_id:value=1", "need a value"),
        ("endless:after_commit=true", "after_commit"),
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


def test_help_mentions_every_kind_and_key() -> None:
    text = fault_help()
    for kind in FAULT_KINDS:
        assert kind in text
    for key in ("first_n", "share", "location=", "size_bytes=", "value=", "__missing__"):
        assert key in text


@pytest.mark.parametrize("value", [{"a": [1, 2.5, None]}, "", 0, False])
def test_any_json_value_is_taken(value: Any) -> None:
    assert parse_fault_rules([{"kind": "odd_coins", "value": value}])[0].value == value
