"""Types of the scanner: severities, rules, the objects it reads and the findings it makes.

Used by every module of `shipmate.policy` and by the CLI. Pure.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]


class Severity(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r}; use low, medium, high or critical") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Source:
    """Where an object came from: a file (and the line its document starts on), or a render."""

    file: str
    line: int = 1
    document: int = 0
    origin: str = "file"  # file | helm | kustomize | shipmate | stdin


@dataclass(frozen=True)
class Resource:
    """One Kubernetes object read by the scanner, with its source."""

    obj: Obj
    source: Source

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))

    @property
    def metadata(self) -> Obj:
        meta = self.obj.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name") or self.metadata.get("generateName") or "")

    @property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return str(ns) if ns else None

    @property
    def ref(self) -> str:
        """`Kind/namespace/name` (namespace omitted when not set)."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    def annotation(self, key: str) -> str | None:
        annotations = self.metadata.get("annotations")
        if isinstance(annotations, dict):
            value = annotations.get(key)
            return None if value is None else str(value)
        return None


@dataclass(frozen=True)
class Hit:
    """What a rule check reports: the path it points at, the container if any, the message
    details and, for secrets, a masked sample."""

    path: str
    detail: str = ""
    container: str | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class Context:
    """What a check may know beyond its object: every scanned object (for cross-object rules),
    the environment, and the policy's options."""

    resources: tuple[Resource, ...]
    environment: str | None
    production: bool
    options: Obj = field(default_factory=dict)
    _index: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def of_kind(self, *kinds: str) -> Iterator[Resource]:
        wanted = set(kinds)
        return (r for r in self.resources if r.kind in wanted)


Check = Callable[[Resource, Context], Iterator[Hit]]


@dataclass(frozen=True)
class Rule:
    """A scanner rule: id, default severity, one-line message, what it applies to, and the fix."""

    id: str
    name: str
    severity: Severity
    message: str
    remediation: str
    category: str
    kinds: frozenset[str]
    check: Check
    default_enabled: bool = True
    description: str = ""


@dataclass(frozen=True)
class Finding:
    """One problem: a rule that fired on a path of an object."""

    rule: str
    severity: Severity
    message: str
    resource: str
    kind: str
    name: str
    namespace: str | None
    path: str
    container: str | None
    remediation: str
    file: str
    line: int
    evidence: str | None = None

    @property
    def fingerprint(self) -> str:
        """Stable identity for baselines: rule, object, path (not the line, which moves)."""
        key = "|".join([self.rule, self.kind, self.namespace or "", self.name, self.path, self.container or ""])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


DEFAULT_PRODUCTION = ("prod", "production", "live")


@dataclass(frozen=True)
class Settings:
    """What a scan runs with: each rule's (enabled, severity), the options, whether the
    environment counts as production, and the failure threshold."""

    rules: dict[str, tuple[bool, Severity]]
    options: dict[str, Any]
    production: bool
    fail_on: Severity = Severity.HIGH


@dataclass(frozen=True)
class Notice:
    """Something the person should know that is not a finding (a skipped file, a suppression)."""

    file: str
    message: str
    line: int = 0
