"""Fault injection for the HitPaw emulator: rules that make it answer as a failing or a hostile server.

The server asks :class:`FaultInjector` about every request. Rules are tried in order and the first that
fires answers instead of the server (nothing is validated, no job created, no coin spent), except the
kinds in :data:`ALTERING_KINDS` and rules with ``after_commit``, which carry the request out first.

Kinds (each described in :data:`FAULT_KINDS` and by ``hitpaw-emulator --help``):

* a failing server: ``500``, ``503_html``, ``429``, ``drop``, ``slow``, ``non_json``, ``truncated_json``,
  ``code_under_200``, ``unknown_status``, ``missing_fields``;
* a hostile one: ``redirect``, ``endless``, ``huge_json``, ``gzip_bomb``, ``drip``, ``png_then_html``;
* a submission created and charged, answered oddly: ``odd_coins``, ``bad_job_id``, ``same_job_id``.

A rule is ``{kind, first_n | share, paths, delay_s, retry_after, after_commit, location, size_bytes,
value}`` (:func:`fault_help` explains each key). ``first_n`` faults the first N matching requests,
``share`` each with a probability drawn from a seeded ``random.Random`` (a run is reproducible), neither
every one; a rule only sees, and counts, the requests no earlier rule took. The text form of ``--fault`` is
``KIND[:key=value,...]``, e.g. ``slow:first_n=2,delay_s=5,paths=/api/task-status``: several paths are
joined by ``|``, ``value`` is JSON (in double quotes it may contain commas).
"""

from __future__ import annotations

import dataclasses
import json
import random
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

#: Every fault kind the emulator knows, with what it does to the answer.
FAULT_KINDS: Final[Mapping[str, str]] = {
    "500": "HTTP 500 with the JSON body of HitPaw's code 100500000",
    "503_html": "HTTP 503 with an HTML page (a gateway in front of the API, not the API itself)",
    "429": "HTTP 429 with the JSON body of code 100429000, and Retry-After when retry_after is set",
    "drop": "close the TCP connection without sending any answer",
    "slow": "sleep delay_s seconds, then answer normally",
    "non_json": "HTTP 200 with the body 'not json'",
    "truncated_json": "HTTP 200 with a JSON document cut in the middle",
    "code_under_200": "HTTP 200 whose JSON body carries the error code 100500000",
    "unknown_status": "task-status answers the undocumented status 'PAUSED' (only /api/task-status)",
    "missing_fields": "HTTP 200 with the success code but an empty data object",
    # a hostile server
    "redirect": "HTTP 302 to location, with a small HTML body holding the marker 'internal-secret-body'",
    "endless": "HTTP 200, a body of size_bytes (300 MiB) sent as fast as read, no Content-Length: the PNG "
    "signature then zeros, or on /api/* the start of a JSON envelope then padding",
    "gzip_bomb": "HTTP 200, Content-Encoding: gzip, ~1 MiB that inflates to size_bytes (1 GiB): the PNG "
    "signature then zeros, or on /api/* the start of a JSON envelope then padding",
    "drip": "the normal answer, one byte every delay_s seconds (the first size_bytes bytes, then the rest)",
    "png_then_html": "HTTP 200 image/png whose body is the PNG signature followed by an HTML page "
    "(default paths /results/*)",
    "odd_coins": "submission: the job is created and charged, the answer's consume_coins is value",
    "bad_job_id": "submission: the job is created and charged, the answer's job_id is value",
    "same_job_id": "submission: every job is created and charged, every answer carries the job_id of the "
    "first one",
    "huge_json": "HTTP 200, a valid JSON envelope of size_bytes (300 MiB) with a giant padding string, "
    "with its Content-Length",
}

#: Kinds for which ``after_commit`` makes sense: the request is carried out, then the answer is lost.
AFTER_COMMIT_KINDS: Final[frozenset[str]] = frozenset({"drop", "500"})
#: Kinds that carry the request out and then alter its answer (the job is created and charged).
ALTERING_KINDS: Final[frozenset[str]] = frozenset({"odd_coins", "bad_job_id", "same_job_id", "drip"})
#: Kinds that only ever apply to a submission.
SUBMISSION_KINDS: Final[frozenset[str]] = frozenset({"odd_coins", "bad_job_id", "same_job_id"})
#: The body marker of ``redirect``: a client must neither follow the redirect nor quote its body.
REDIRECT_BODY_MARKER: Final = "internal-secret-body"
#: The ``value`` that removes the field instead of replacing it.
MISSING: Final = "__missing__"
#: Defaults and bound of ``size_bytes``.
DEFAULT_STREAM_BYTES: Final = 300 * 1024 * 1024
DEFAULT_BOMB_BYTES: Final = 1024 * 1024 * 1024
MAX_SIZE_BYTES: Final = 4 * 1024 * 1024 * 1024

_TASK_STATUS_PATH: Final = "/api/task-status"
_SUBMIT_PATH: Final = "/api/image-segmentation"
_SIZED_KINDS: Final = frozenset({"endless", "gzip_bomb", "drip", "huge_json"})
_VALUE_KINDS: Final = frozenset({"odd_coins", "bad_job_id"})
_DEFAULT_PATHS: Final[Mapping[str, tuple[str, ...]]] = {"png_then_html": ("/results/*",)}
_RULE_KEYS: Final = frozenset(
    {
        "kind",
        "first_n",
        "share",
        "paths",
        "delay_s",
        "retry_after",
        "after_commit",
        "location",
        "size_bytes",
        "value",
    }
)


class _NoValue:
    """The type of :data:`NO_VALUE`."""

    def __repr__(self) -> str:
        return "NO_VALUE"


#: ``value`` when none was given (``None`` is a value: JSON ``null``).
NO_VALUE: Final = _NoValue()


class FaultSpecError(ValueError):
    """A fault rule (textual or JSON) that cannot be understood; the message says why."""


@dataclass
class FaultRule:
    """One fault rule. ``fired`` counts how often it has fired (it is what ``first_n`` is checked against)."""

    kind: str
    first_n: int | None = None
    share: float | None = None
    paths: tuple[str, ...] | None = None
    delay_s: float = 0.0
    retry_after: float | None = None
    after_commit: bool = False
    location: str | None = None
    size_bytes: int | None = None
    value: Any = NO_VALUE
    fired: int = field(default=0, compare=False)
    #: For ``same_job_id``: the job id of the first submission the rule fired on.
    first_job_id: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise FaultSpecError(f"unknown fault kind {self.kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.first_n is not None and self.share is not None:
            raise FaultSpecError("a fault rule takes first_n or share, not both")
        if self.first_n is not None and self.first_n < 0:
            raise FaultSpecError("first_n must be >= 0")
        if self.share is not None and not 0.0 <= self.share <= 1.0:
            raise FaultSpecError("share must be between 0 and 1")
        if self.delay_s < 0:
            raise FaultSpecError("delay_s must be >= 0")
        if self.kind in ("slow", "drip") and self.delay_s == 0:
            raise FaultSpecError(f"a {self.kind!r} fault needs delay_s > 0")
        if self.retry_after is not None and self.retry_after < 0:
            raise FaultSpecError("retry_after must be >= 0")
        if self.after_commit and self.kind not in AFTER_COMMIT_KINDS:
            raise FaultSpecError(f"after_commit only applies to {sorted(AFTER_COMMIT_KINDS)}")
        if self.paths is not None:
            for path in self.paths:
                if not path.startswith("/"):
                    raise FaultSpecError(f"fault paths must start with '/': {path!r}")
        self._check_hostile_keys()

    def _check_hostile_keys(self) -> None:
        if (self.location is not None) != (self.kind == "redirect"):
            raise FaultSpecError("a 'redirect' fault needs a location, and only it takes one")
        if self.location is not None and (
            not self.location or any(ord(ch) < 32 or ord(ch) == 127 for ch in self.location)
        ):
            raise FaultSpecError("location must be a non-empty string without control characters")
        if self.size_bytes is not None:
            if self.kind not in _SIZED_KINDS:
                raise FaultSpecError(f"size_bytes only applies to {sorted(_SIZED_KINDS)}")
            if not 1 <= self.size_bytes <= MAX_SIZE_BYTES:
                raise FaultSpecError(f"size_bytes must be from 1 to {MAX_SIZE_BYTES}")
        if (self.value is not NO_VALUE) != (self.kind in _VALUE_KINDS):
            raise FaultSpecError(f"{sorted(_VALUE_KINDS)} need a value, and only they take one")
        if self.value is not NO_VALUE:
            try:
                json.dumps(self.value)
            except (TypeError, ValueError) as exc:
                raise FaultSpecError(f"value must be a JSON value: {exc}") from exc

    @property
    def stream_bytes(self) -> int:
        """How many bytes ``endless`` and ``huge_json`` send."""
        return DEFAULT_STREAM_BYTES if self.size_bytes is None else self.size_bytes

    @property
    def bomb_bytes(self) -> int:
        """How many bytes a ``gzip_bomb`` inflates to."""
        return DEFAULT_BOMB_BYTES if self.size_bytes is None else self.size_bytes

    def matches(self, path: str) -> bool:
        """Whether this rule applies to a request for ``path`` (regardless of first_n/share)."""
        if self.kind == "unknown_status" and path != _TASK_STATUS_PATH:
            return False
        if self.kind in SUBMISSION_KINDS and path != _SUBMIT_PATH:
            return False
        paths = self.paths if self.paths is not None else _DEFAULT_PATHS.get(self.kind)
        if paths is None:
            return path.startswith("/api/")
        return any(_path_matches(pattern, path) for pattern in paths)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as accepted by :meth:`from_dict` (plus the read-only ``fired`` counter)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.first_n is not None:
            out["first_n"] = self.first_n
        if self.share is not None:
            out["share"] = self.share
        if self.paths is not None:
            out["paths"] = list(self.paths)
        if self.delay_s:
            out["delay_s"] = self.delay_s
        if self.retry_after is not None:
            out["retry_after"] = self.retry_after
        if self.after_commit:
            out["after_commit"] = True
        if self.location is not None:
            out["location"] = self.location
        if self.size_bytes is not None:
            out["size_bytes"] = self.size_bytes
        if self.value is not NO_VALUE:
            out["value"] = self.value
        out["fired"] = self.fired
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FaultRule:
        """Build a rule from its JSON form; unknown keys are refused so that typos do not pass silently."""
        if not isinstance(raw, Mapping):
            raise FaultSpecError(f"a fault rule must be a JSON object, got {type(raw).__name__}")
        unknown = set(raw) - _RULE_KEYS - {"fired"}
        if unknown:
            raise FaultSpecError(f"unknown fault rule keys: {sorted(unknown)}")
        if "kind" not in raw:
            raise FaultSpecError("a fault rule needs a 'kind'")
        paths = raw.get("paths")
        if isinstance(paths, str):
            paths = [paths]
        location = raw.get("location")
        if location is not None and not isinstance(location, str):
            raise FaultSpecError("location must be a string")
        if paths is not None and (
            not isinstance(paths, list | tuple) or not all(isinstance(p, str) for p in paths)
        ):
            raise FaultSpecError("paths must be a list of strings")
        try:
            return cls(
                kind=str(raw["kind"]),
                first_n=_opt_int(raw.get("first_n"), "first_n"),
                share=_opt_float(raw.get("share"), "share"),
                paths=tuple(paths) if paths is not None else None,
                delay_s=_opt_float(raw.get("delay_s"), "delay_s") or 0.0,
                retry_after=_opt_float(raw.get("retry_after"), "retry_after"),
                after_commit=_bool(raw.get("after_commit", False), "after_commit"),
                location=location,
                size_bytes=_opt_int(raw.get("size_bytes"), "size_bytes"),
                value=raw.get("value", NO_VALUE),
            )
        except FaultSpecError:
            raise
        except (TypeError, ValueError) as exc:
            raise FaultSpecError(str(exc)) from exc


def _path_matches(pattern: str, path: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return path == pattern


def _opt_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise FaultSpecError(f"{name} must be an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise FaultSpecError(f"{name} must be an integer, got {value!r}") from exc


def _opt_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise FaultSpecError(f"{name} must be a number")
    try:
        return float(value)
    except ValueError as exc:
        raise FaultSpecError(f"{name} must be a number, got {value!r}") from exc


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "yes", "false", "0", "no"}:
        return value.lower() in {"true", "1", "yes"}
    raise FaultSpecError(f"{name} must be true or false, got {value!r}")


def _split_params(params: str) -> list[str]:
    """``a=1,b="x,y"`` -> ``['a=1', 'b="x,y"']``: commas inside a double-quoted JSON string do not split."""
    tokens: list[str] = []
    current: list[str] = []
    in_string = escaped = False
    for ch in params:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == ",":
            tokens.append("".join(current))
            current = []
            continue
        current.append(ch)
    if in_string:
        raise FaultSpecError(f"unterminated string in fault spec parameters {params!r}")
    tokens.append("".join(current))
    return [t.strip() for t in tokens if t.strip()]


def _text_value(key: str, text: str) -> Any:
    """A value of the text form: JSON for ``value``, else the text (unquoted if written as a JSON string)."""
    if key == "value" or text.startswith('"'):
        try:
            return json.loads(text)
        except ValueError as exc:
            raise FaultSpecError(
                f"{key} must be written as JSON (strings in double quotes), got {text!r}"
            ) from exc
    return text


def parse_fault_spec(spec: str) -> FaultRule:
    """Parse the command-line form ``KIND[:key=value,...]`` (see the module docstring) into a rule."""
    kind, _, params = spec.strip().partition(":")
    raw: dict[str, Any] = {"kind": kind.strip()}
    last_key: str | None = None
    for token in _split_params(params):
        key, sep, value = token.partition("=")
        if not sep:
            # "paths=/a,/b" reads naturally, so a bare path continues the preceding paths list.
            if last_key == "paths" and token.startswith("/"):
                raw["paths"].append(token)
                continue
            raise FaultSpecError(f"expected key=value in fault spec {spec!r}, got {token!r}")
        key = key.strip()
        if key in raw:
            raise FaultSpecError(f"{key!r} given twice in fault spec {spec!r}")
        raw[key] = [p for p in value.split("|") if p] if key == "paths" else _text_value(key, value.strip())
        last_key = key
    return FaultRule.from_dict(raw)


def parse_fault_rules(raw: Any) -> list[FaultRule]:
    """Rules from JSON: a list of rule objects or of textual specs (both are accepted for convenience)."""
    if isinstance(raw, Mapping) and "rules" in raw:
        raw = raw["rules"]
    if not isinstance(raw, list):
        raise FaultSpecError("fault rules must be a JSON list")
    return [parse_fault_spec(item) if isinstance(item, str) else FaultRule.from_dict(item) for item in raw]


class FaultInjector:
    """The active rules, the seeded random source for ``share`` and the per-kind count of faults served.

    It is only used from the server's event loop, so it needs no lock.
    """

    def __init__(self, rules: Iterable[FaultRule] = (), seed: int = 0) -> None:
        self.seed = seed
        self.rules: list[FaultRule] = []
        self._random = random.Random(seed)
        self.served: dict[str, int] = {}
        self.set_rules(rules)

    def set_rules(self, rules: Iterable[FaultRule], seed: int | None = None) -> None:
        """Replace the rules; the random source restarts from the seed so the same rules replay alike."""
        if seed is not None:
            self.seed = seed
        # Copies with fresh counters: the caller's rule objects stay untouched.
        self.rules = [dataclasses.replace(rule, fired=0, first_job_id=None) for rule in rules]
        self._random = random.Random(self.seed)

    def clear(self) -> None:
        """Remove every rule (the counters of faults served stay: they describe the past)."""
        self.set_rules(())

    def reset_counters(self) -> None:
        """Forget how many faults were served."""
        self.served.clear()

    def pick(self, path: str) -> FaultRule | None:
        """The rule that fires for this request, if any; counts it as served."""
        for rule in self.rules:
            if not rule.matches(path):
                continue
            if rule.first_n is not None:
                fire = rule.fired < rule.first_n
            elif rule.share is not None:
                fire = self._random.random() < rule.share
            else:
                fire = True
            if fire:
                rule.fired += 1
                self.served[rule.kind] = self.served.get(rule.kind, 0) + 1
                return rule
        return None

    def describe(self) -> list[dict[str, Any]]:
        """The rules in their JSON form, with how often each fired."""
        return [rule.to_dict() for rule in self.rules]


def fault_help() -> str:
    """The ``--fault`` syntax and the list of kinds, for ``hitpaw-emulator --help``."""
    kinds = "\n".join(
        textwrap.fill(
            what,
            width=100,
            initial_indent=f"  {kind:<15} ",
            subsequent_indent=" " * 18,
            break_on_hyphens=False,
        )
        for kind, what in FAULT_KINDS.items()
    )
    return (
        "fault rules (--fault, repeatable): KIND[:key=value,...] with keys\n"
        "  first_n=N       the first N matching requests get the fault, then it stops\n"
        "  share=P         each matching request gets it with probability P (seeded, see --seed)\n"
        "                  (neither first_n nor share: every matching request)\n"
        "  paths=P1|P2     exact paths (trailing * = prefix); default: every /api/* path\n"
        "  delay_s=S       for 'slow' and 'drip'\n"
        "  retry_after=S   for '429': send a Retry-After header\n"
        "  after_commit=true  for 'drop' and '500': carry the request out (job created, coins\n"
        "                  charged) and only then lose or replace the answer\n"
        "  location=URL    for 'redirect'\n"
        "  size_bytes=N    for 'endless', 'huge_json' (default 300 MiB), 'gzip_bomb' (inflated size,\n"
        "                  default 1 GiB), 'drip' (bytes dripped, default all); at most 4 GiB\n"
        "  value=JSON      for 'odd_coins' and 'bad_job_id': value=\"20\", value=-5, value=true;\n"
        '                  value="__missing__" removes the field\n'
        "examples: --fault 500:first_n=3  --fault 429:share=0.2,retry_after=1\n"
        "          --fault slow:first_n=2,delay_s=5,paths=/api/task-status\n"
        "          --fault redirect:location=http://127.0.0.1:1/internal,paths=/results/*\n"
        "          --fault endless:size_bytes=1000000000,paths=/results/*  --fault gzip_bomb\n"
        "          --fault drip:delay_s=5,paths=/api/task-status  --fault 'odd_coins:value=\"20\"'\n"
        "          --fault 'bad_job_id:value=\"x\\nx\"'  --fault same_job_id  --fault huge_json:first_n=1\n"
        f"kinds:\n{kinds}"
    )
