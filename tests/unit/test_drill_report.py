"""The drills' shared report: JSON shape, verdict, and an HTML page that escapes what it shows."""

from __future__ import annotations

import json

from shipmate.drills.report import Check, Report, to_html, to_json, to_text


def report(*checks: Check) -> Report:
    return Report("rollback", "dev", 1_700_000_000.0, 1_700_000_012.5, {"requests": 10, "failed_requests": 0},
                  checks, ((0.0, 5, 0), (0.25, 5, 1)))


def test_json_shape_and_verdict() -> None:
    ok = to_json(report(Check("a", True, "fine")))
    assert list(ok) == ["drill", "environment", "passed", "started", "finished", "metrics", "checks", "timeline"]
    assert ok["passed"] is True
    assert ok["started"] == "2023-11-14T22:13:20Z"
    assert ok["checks"] == [{"name": "a", "passed": True, "detail": "fine"}]
    assert to_json(report(Check("a", True, ""), Check("b", False, "broke")))["passed"] is False
    assert to_json(report())["passed"] is False, "a drill with no check proves nothing"


def test_text_and_html() -> None:
    r = report(Check("<b>x</b>", False, "a & b </script>"))
    assert to_text(r)[0] == "drill rollback on dev: FAILED"
    page = to_html(r)
    assert "&lt;b&gt;x&lt;/b&gt;" in page
    assert "a &amp; b &lt;/script&gt;" in page
    island = page.split('id="report">')[1].split("</script>")[0]
    assert json.loads(island) == to_json(r)
    assert "<path d=\"M10.0," in page
