"""The one report shape every drill writes: JSON for machines, a self-contained HTML page for people.

Called by each drill (rollback now; restore, rotation and secret-scan later). Pure: it turns a
`Report` into text. The JSON shape is the contract scripts rely on:
`{"drill", "environment", "passed", "started", "finished", "metrics": {...}, "checks": [{"name",
"passed", "detail"}]}` (plus "timeline": [[seconds, requests, failed], ...] when there was load).
"""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Report:
    drill: str
    environment: str
    started: float
    finished: float
    metrics: dict[str, Any]
    checks: tuple[Check, ...]
    timeline: tuple[tuple[float, int, int], ...] = field(default=())

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def to_json(report: Report) -> dict[str, Any]:
    return {
        "drill": report.drill, "environment": report.environment, "passed": report.passed,
        "started": _stamp(report.started), "finished": _stamp(report.finished),
        "metrics": report.metrics,
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in report.checks],
        "timeline": [list(p) for p in report.timeline],
    }


def to_text(report: Report) -> list[str]:
    lines = [f"drill {report.drill} on {report.environment}: {'PASSED' if report.passed else 'FAILED'}"]
    lines += [f"  {k}: {v}" for k, v in report.metrics.items()]
    lines += [f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in report.checks]
    return lines


def to_html(report: Report) -> str:
    """A page with the verdict, the metrics, the checks and an SVG chart of requests and failures."""
    e = html.escape
    rows = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in report.metrics.items())
    checks = "".join(f"<li class={'ok' if c.passed else 'fail'}><b>{e(c.name)}</b>: {e(c.detail)}</li>"
                     for c in report.checks)
    verdict = "passed" if report.passed else "failed"
    css = "ok" if report.passed else "fail"
    data = json.dumps(to_json(report), sort_keys=True).replace("<", "\\u003c")  # safe inside <script>
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shipmate drill {e(report.drill)}: {verdict}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:60rem}}.ok{{color:#1a7f37}}
.fail{{color:#cf222e}}th{{text-align:left;padding-right:1rem}}svg{{border:1px solid #ddd}}</style></head>
<body><h1>Drill {e(report.drill)} on {e(report.environment)}: <span class="{css}">{verdict}</span></h1>
<p>{e(_stamp(report.started))} to {e(_stamp(report.finished))}</p>
<h2>Metrics</h2><table>{rows}</table>
<h2>Checks</h2><ul>{checks}</ul>
<h2>Requests and failures over time</h2>{_chart(report.timeline)}
<script type="application/json" id="report">{data}</script>
</body></html>
"""


def _chart(points: tuple[tuple[float, int, int], ...], width: int = 800, height: int = 200) -> str:
    if not points:
        return "<p>no load during this drill</p>"
    end = max(t for t, _, _ in points) or 1.0
    top = max(max(r for _, r, _ in points), 1)

    def path(values: list[tuple[float, int]]) -> str:
        return " ".join(f"{'M' if i == 0 else 'L'}{t / end * (width - 20) + 10:.1f},"
                        f"{height - 20 - v / top * (height - 40):.1f}" for i, (t, v) in enumerate(values))

    step = points[1][0] - points[0][0] if len(points) > 1 else 0.0
    requests = path([(t, r) for t, r, _ in points])
    failures = path([(t, f) for t, _, f in points])
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="requests and failures over time">'
            f'<path d="{requests}" fill="none" stroke="#0969da" stroke-width="2"/>'
            f'<path d="{failures}" fill="none" stroke="#cf222e" stroke-width="2"/>'
            f'<text x="10" y="14" font-size="12" fill="#0969da">requests per {step:g}s (max {top})</text>'
            f'<text x="260" y="14" font-size="12" fill="#cf222e">failed</text></svg>')
