"""The labelled policy corpus (`tests/policy_corpus/`): reading it, scanning it and scoring the rules.

Used by `test_policy_corpus` (precision and recall per rule) and `test_policy_leaks` (no secret of
the corpus in any report). Each file is one scan, so cross-object rules (PodDisruptionBudgets,
NetworkPolicies, service accounts, HPAs) see the other objects of the same file and nothing else.

Every object says which rules must fire on it in the annotation `corpus.shipmate.dev/expect`
(comma-separated ids, `""` for none), at the settings its file is scanned with: files named
`*.prod.*` are scanned as environment `prod`; `options.yaml` with the policy options below; the
others with the defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from shipmate.policy.config import Options, Policy, effective
from shipmate.policy.engine import ScanResult, default_settings, scan
from shipmate.policy.models import Resource, Settings
from shipmate.policy.rules import BY_ID, RULES
from shipmate.policy.sources import Inputs, read_text

CORPUS = Path(__file__).resolve().parent.parent / "policy_corpus"
EXPECT = "corpus.shipmate.dev/expect"
OPTIONS_FILE = "options.yaml"
PROD_ENVIRONMENT = "prod"
# The policy of options.yaml: turns on the rules that need an option (SM202, SM204).
OPTIONS_POLICY = Policy(options=Options(
    require_digest=True,
    allowed_registries=["ghcr.io/acme", "registry.internal.example.com", "docker.io/library"],
))
# Rules that can only fire under some settings: their negatives count only in the files that
# turn them on, so that "three negatives" means three objects where the rule was really asked.
CONDITIONAL = {"SM202": "options", "SM204": "options", "SM501": "prod", "SM904": "prod", "SM905": "prod"}


@dataclass(frozen=True)
class Case:
    """One labelled object of the corpus and what the scan said about it."""

    file: str
    ref: str
    line: int
    kind: str
    expected: frozenset[str]
    fired: frozenset[str]
    scope: frozenset[str]  # "prod", "options": which settings its file was scanned with


@dataclass(frozen=True)
class Score:
    rule: str
    positives: int
    negatives: int
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        if self.tp + self.fp == 0:
            return 1.0 if self.positives == 0 else 0.0
        return self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        return 1.0 if self.positives == 0 else self.tp / self.positives


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    inputs: Inputs
    environment: str | None
    settings: Settings
    result: ScanResult

    @property
    def scope(self) -> frozenset[str]:
        names = set()
        if self.environment == PROD_ENVIRONMENT:
            names.add("prod")
        if self.path.name == OPTIONS_FILE:
            names.add("options")
        return frozenset(names)


def corpus_paths() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def _settings(path: Path) -> tuple[str | None, Settings]:
    environment = PROD_ENVIRONMENT if ".prod." in path.name else None
    if path.name == OPTIONS_FILE:
        return environment, effective(OPTIONS_POLICY, environment)
    return environment, default_settings(environment)


@cache
def scanned() -> tuple[CorpusFile, ...]:
    """Every corpus file, read and scanned on its own."""
    files = []
    for path in corpus_paths():
        inputs = Inputs()
        read_text(path.read_text(encoding="utf-8"), path.name, inputs)
        environment, settings = _settings(path)
        result = scan(inputs.resources, settings, environment=environment)
        files.append(CorpusFile(path, inputs, environment, settings, result))
    return tuple(files)


def expected_rules(resource: Resource) -> frozenset[str]:
    raw = resource.annotation(EXPECT)
    if raw is None:
        raise AssertionError(f"{resource.source.file}:{resource.source.line}: {resource.ref} has no {EXPECT} "
                             "annotation")
    ids = frozenset(part.strip().upper() for part in raw.split(",") if part.strip())
    unknown = sorted(ids - BY_ID.keys())
    if unknown:
        raise AssertionError(f"{resource.source.file}:{resource.source.line}: {resource.ref} expects unknown "
                             f"rules {unknown}")
    return ids


@cache
def cases() -> tuple[Case, ...]:
    out: list[Case] = []
    for corpus_file in scanned():
        fired: dict[tuple[int, str], set[str]] = {}
        for finding in corpus_file.result.findings:
            fired.setdefault((finding.line, finding.resource), set()).add(finding.rule)
        seen: set[str] = set()
        for resource in corpus_file.inputs.resources:
            if resource.ref in seen:
                raise AssertionError(f"{corpus_file.path.name}: {resource.ref} appears twice; give it another name")
            seen.add(resource.ref)
            key = (resource.source.line, resource.ref)
            out.append(Case(corpus_file.path.name, resource.ref, resource.source.line, resource.kind,
                            expected_rules(resource), frozenset(fired.pop(key, set())), corpus_file.scope))
        if fired:
            raise AssertionError(f"{corpus_file.path.name}: findings on no corpus object: {sorted(fired)}")
    return tuple(out)


def _applies(rule_id: str, case: Case, settings_by_file: dict[str, Settings]) -> bool:
    rule = BY_ID[rule_id]
    if not settings_by_file[case.file].rules[rule_id][0]:
        return False
    if rule.kinds and case.kind not in rule.kinds:
        return False
    needed = CONDITIONAL.get(rule_id)
    return needed is None or needed in case.scope


def scores(items: Iterable[Case] | None = None) -> list[Score]:
    """Per rule: positives, negatives (objects the rule was asked about that must not fire), TP, FP, FN."""
    chosen = list(cases() if items is None else items)
    settings_by_file = {f.path.name: f.settings for f in scanned()}
    out = []
    for rule in RULES:
        positives = sum(1 for c in chosen if rule.id in c.expected)
        negatives = sum(1 for c in chosen if rule.id not in c.expected and _applies(rule.id, c, settings_by_file))
        tp = sum(1 for c in chosen if rule.id in c.expected and rule.id in c.fired)
        fp = sum(1 for c in chosen if rule.id not in c.expected and rule.id in c.fired)
        fn = sum(1 for c in chosen if rule.id in c.expected and rule.id not in c.fired)
        out.append(Score(rule.id, positives, negatives, tp, fp, fn))
    return out


def mismatches() -> list[str]:
    """Objects where the scan and the label disagree, one line each."""
    lines = []
    for c in cases():
        missing, extra = sorted(c.expected - c.fired), sorted(c.fired - c.expected)
        if missing or extra:
            lines.append(f"{c.file}:{c.line} {c.ref}: " + "; ".join(
                part for part in (f"missed {','.join(missing)}" if missing else "",
                                  f"unexpected {','.join(extra)}" if extra else "") if part))
    return lines


def table(items: list[Score]) -> str:
    """A Markdown table of the scores."""
    rows = ["| rule | name | positives | negatives | TP | FP | FN | precision | recall |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in items:
        rows.append(f"| {s.rule} | {BY_ID[s.rule].name} | {s.positives} | {s.negatives} | {s.tp} | {s.fp} | "
                    f"{s.fn} | {s.precision:.2f} | {s.recall:.2f} |")
    return "\n".join(rows)
