"""Splitting YAML streams into documents and finding the line of a key path in one, from text.

Called by the scanner's input reader (`shipmate.policy.sources`) to give each finding a line
without building a position-tracking parse of every document (which costs ten times a plain
parse on large files). Works on block-style YAML, which is what Kubernetes manifests are; for
anything it cannot follow it returns the line of the deepest parent it found. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEPARATOR = re.compile(r"^---(?:\s.*)?$|^\.\.\.\s*$")
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


@dataclass(frozen=True)
class Chunk:
    """One YAML document of a stream: its text and the 1-based line it starts on."""

    text: str
    line: int


def split_documents(text: str) -> list[Chunk]:
    """Documents of a YAML stream, split at `---` and `...` lines, with their first line."""
    chunks: list[Chunk] = []
    lines = text.splitlines(keepends=True)
    start = 0
    current: list[str] = []
    for index, line in enumerate(lines):
        if line.startswith(("---", "...")) and _SEPARATOR.match(line.rstrip("\r\n")):
            if current:
                chunks.append(Chunk("".join(current), start + 1))
            rest = line[3:].strip()
            current = [rest + "\n"] if line.startswith("---") and rest and not rest.startswith("#") else []
            start = index if current else index + 1
            continue
        current.append(line)
    if current:
        chunks.append(Chunk("".join(current), start + 1))
    return [c for c in chunks if _has_content(c.text)]


def _has_content(text: str) -> bool:
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


def _parts(path: str) -> list[str | int]:
    return [m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _PATH_PART.finditer(path)]


def _content(line: str) -> tuple[int, str] | None:
    """(indent, stripped text) of a line with content, None for blank and comment lines."""
    stripped = line.lstrip(" ")
    if not stripped.strip() or stripped.startswith("#"):
        return None
    return len(line) - len(stripped), stripped


def _is_item(stripped: str) -> bool:
    return stripped.startswith("- ") or stripped.rstrip() == "-"


def line_of(chunk: Chunk, path: str) -> int:
    """The 1-based file line where `path` (e.g. `spec.template.spec.containers[0].image`) is
    written in the document, or the line of its deepest parent that could be found."""
    lines = chunk.text.splitlines()
    best = 0
    lo, hi = 0, len(lines)
    for part in _parts(path):
        found = _find_item(lines, lo, hi, part) if isinstance(part, int) else _find_key(lines, lo, hi, part)
        if found is None:
            break
        best, lo, hi = found
    return chunk.line + best


def _find_key(lines: list[str], lo: int, hi: int, key: str) -> tuple[int, int, int] | None:
    """(row of `key`, start and end of its value's block) within lines[lo:hi]."""
    pattern = re.compile(rf"^(?:- )?[\"']?{re.escape(key)}[\"']?\s*:(\s|$)")
    level: int | None = None
    for row in range(lo, hi):
        content = _content(lines[row])
        if content is None:
            continue
        indent, stripped = content
        key_indent = indent + 2 if _is_item(stripped) else indent
        if level is None:
            level = key_indent
        if key_indent < level:
            return None
        if key_indent == level and pattern.match(stripped):
            end = hi
            for after in range(row + 1, hi):
                nxt = _content(lines[after])
                if nxt is None:
                    continue
                if nxt[0] < level or (nxt[0] == level and not _is_item(nxt[1])):
                    end = after
                    break
            return row, row + 1, end
    return None


def _find_item(lines: list[str], lo: int, hi: int, index: int) -> tuple[int, int, int] | None:
    """(row of item `index` of the block sequence in lines[lo:hi], start and end of the item)."""
    dash: int | None = None
    count = -1
    for row in range(lo, hi):
        content = _content(lines[row])
        if content is None:
            continue
        indent, stripped = content
        if dash is None:
            if not _is_item(stripped):
                return None
            dash = indent
        if indent < dash:
            return None
        if indent == dash and _is_item(stripped):
            count += 1
            if count == index:
                end = hi
                for after in range(row + 1, hi):
                    nxt = _content(lines[after])
                    if nxt is not None and (nxt[0] < dash or (nxt[0] == dash and _is_item(nxt[1]))):
                        end = after
                        break
                return row, row, end
    return None
