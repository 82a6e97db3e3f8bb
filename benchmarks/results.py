"""benchmarks/RESULTS.md: each benchmark script owns one `## section` and replaces only that."""

from __future__ import annotations


def replace_section(document: str, section: str, body: str) -> str:
    """`document` with its `## section` replaced by `body` (appended when absent)."""
    lines = document.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"## {section}"), None)
    if start is None:
        head = document.rstrip("\n") if document.strip() else "# Benchmarks"
        return f"{head}\n\n{body.rstrip()}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    kept = lines[:start] + body.rstrip("\n").splitlines() + (["", *lines[end:]] if end < len(lines) else [])
    return "\n".join(kept).rstrip("\n") + "\n"
