"""Property: however an example spec is broken, loading it (and rendering it, when it still
loads) raises nothing but `SpecError`, whose text is one line.

Two families of mutation, each applied one to three times to one of the example specs:
- on the text: delete, duplicate (a duplicate key) or swap lines, insert garbage characters
  (YAML indicators, tabs, control characters, other scripts), truncate;
- on the data (read and written back with PyYAML's safe loader and dumper): delete a key, rename it
  with a typo, replace a value with one of another type, swap two values, turn a number
  negative, huge, non-finite or into a string.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shipmate.errors import SpecError
from shipmate.render.kit import build_kit
from shipmate.spec.loader import load_text
from tests.support import EXAMPLES_DIR

FILE = "shipmate.yaml"
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GARBAGE = st.lists(
    st.sampled_from([*":{}[]&*!|>'\"%@`#,-?$\\", "\t", "\n", " ", "\x00", "\x07", "\x1b", "\ufeff", "é", "名",
                     "\u2028", "0", "9", "-1", "${", "${X}", "$${", "<<", "---", "...", "!!int ", "&a ", "*a"]),
    min_size=1, max_size=4,
).map("".join)
OTHER_VALUES: list[Any] = [None, True, False, 0, -1, 10**30, 1.5, float("inf"), float("nan"), "", "x",
                           "${UNSET_IN_FUZZ}", "0 0 * * *", "100Gi", "-5m", [], {}, [1, "a"], {"a": 1},
                           {"kind": "generic"}, "a" * 70]


@cache
def example_texts() -> dict[str, str]:
    """Example name -> spec text (tests draw a name, so a failure prints a name, not the text)."""
    found = {p.parent.name: p.read_text(encoding="utf-8") for p in sorted(EXAMPLES_DIR.glob("*/shipmate.yaml"))}
    assert found, f"no example specs under {EXAMPLES_DIR}"
    return found


@cache
def example_data(name: str) -> Any:
    return yaml.load(example_texts()[name], Loader=LOADER)  # noqa: S506 - a safe loader


EXAMPLE = st.sampled_from(sorted(p.parent.name for p in EXAMPLES_DIR.glob("*/shipmate.yaml")))


def outcome(text: str) -> tuple[str, SpecError | None]:
    """Load, then render every environment: the stage that refused the spec and its error.
    Anything but a SpecError propagates and fails the test by itself."""
    try:
        spec = load_text(text, FILE, env={})
    except SpecError as exc:
        return "load", exc
    try:
        build_kit(spec)
    except SpecError as exc:
        return "render", exc
    return "ok", None


def assert_only_spec_errors(text: str) -> None:
    """A refused spec gets one non-empty line; from the loader it starts with the file's name."""
    stage, error = outcome(text)
    if error is None:
        return
    assert str(error).strip(), "an empty error message"
    assert "\n" not in str(error), str(error)
    if stage == "load":
        assert error.location is not None, str(error)
        assert str(error).startswith(f"{FILE}:"), str(error)


# --- text mutations -------------------------------------------------------------------------

def mutate_text(data: st.DataObject, text: str) -> str:
    lines = text.split("\n")
    op = data.draw(st.sampled_from(["delete", "duplicate", "swap", "garbage", "truncate"]))
    i = data.draw(st.integers(0, len(lines) - 1))
    if op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i, lines[i])
    elif op == "swap":
        j = data.draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == "garbage":
        col = data.draw(st.integers(0, len(lines[i])))
        lines[i] = lines[i][:col] + data.draw(GARBAGE) + lines[i][col:]
    else:
        return text[: data.draw(st.integers(0, len(text)))]
    return "\n".join(lines)


@SETTINGS
@given(data=st.data())
def test_text_mutations_raise_only_spec_errors(data: st.DataObject) -> None:
    text = example_texts()[data.draw(EXAMPLE)]
    for _ in range(data.draw(st.integers(1, 3))):
        text = mutate_text(data, text)
    assert_only_spec_errors(text)


# --- data mutations -------------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    """Every key and index path under `node` (not the root)."""
    out: list[Path_] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.append((*prefix, index))
            out += paths(value, (*prefix, index))
    return out


def unshared(node: Any) -> Any:
    """A copy in which no two places hold the same dict or list (YAML aliases share them, and a
    swap between such places could make a cycle)."""
    if isinstance(node, dict):
        return {key: unshared(value) for key, value in node.items()}
    if isinstance(node, list):
        return [unshared(value) for value in node]
    return node


def parent_of(root: Any, path: Path_) -> Any:
    node = root
    for part in path[:-1]:
        node = node[part]
    return node


def mutate_data(data: st.DataObject, root: Any) -> None:
    every = paths(root)
    if not every:
        return
    path = data.draw(st.sampled_from(every))
    parent, last = parent_of(root, path), path[-1]
    op = data.draw(st.sampled_from(["delete", "typo", "retype", "swap", "number"]))
    if op == "delete":
        del parent[last]
    elif op == "typo" and isinstance(parent, dict):
        key = str(last)
        cut = data.draw(st.integers(0, len(key)))
        new = key[:cut] + data.draw(st.sampled_from(["", "x", "_", "-", "S"])) + key[cut + 1:]
        parent[new] = parent.pop(last)
    elif op == "retype":
        parent[last] = data.draw(st.sampled_from(OTHER_VALUES))
    elif op == "swap":
        other = data.draw(st.sampled_from(every))
        if other[: len(path)] != path and path[: len(other)] != other:
            other_parent = parent_of(root, other)
            parent[last], other_parent[other[-1]] = other_parent[other[-1]], parent[last]
    else:
        numbers = [p for p in every if isinstance(parent_of(root, p)[p[-1]], int | float)]
        if numbers:
            target = data.draw(st.sampled_from(numbers))
            holder, value = parent_of(root, target), parent_of(root, target)[target[-1]]
            holder[target[-1]] = data.draw(st.sampled_from(
                [-value, -1, value * 10**12, 2**63, 2**31, float("inf"), float("nan"), str(value), f"{value}x"]))


@SETTINGS
@given(data=st.data())
def test_data_mutations_raise_only_spec_errors(data: st.DataObject) -> None:
    root = unshared(example_data(data.draw(EXAMPLE)))
    for _ in range(data.draw(st.integers(1, 3))):
        mutate_data(data, root)
    assert_only_spec_errors(yaml.dump(root, Dumper=DUMPER, sort_keys=False, allow_unicode=True))


def test_every_example_loads_and_renders_unchanged() -> None:
    """The property's starting points are themselves valid."""
    for text in example_texts().values():
        build_kit(load_text(text, FILE, env={}))
