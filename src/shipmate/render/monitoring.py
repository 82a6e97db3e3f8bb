"""Alert rules, SLO burn-rate alerts and a Grafana dashboard for one environment.

Called by `shipmate.render.objects` (PrometheusRule and the dashboard ConfigMap) and by the
`monitoring` output format (a plain rules file that `promtool check rules` reads, and the
dashboard JSON). Pure.

Metric names are the ones shipmate's own router exports and the usual client libraries use:
`http_requests_total{code}` and `http_request_duration_seconds_bucket{le}`, scraped with
`job` = the service name and `namespace` = the environment's namespace.
"""

from __future__ import annotations

import json
from typing import Any

from shipmate.plan.models import Plan

Obj = dict[str, Any]
WINDOW = "5m"


def _sel(plan: Plan, service: str, extra: str = "") -> str:
    return f'{{namespace="{plan.namespace}",job="{service}"{extra}}}'


def _num(value: float) -> str:
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def error_ratio(plan: Plan, service: str, window: str = WINDOW) -> str:
    """PromQL: the share of 5xx responses of one service."""
    errors = _sel(plan, service, ',code=~"5.."')
    return (f"sum(rate(http_requests_total{errors}[{window}])) / "
            f"sum(rate(http_requests_total{_sel(plan, service)}[{window}]))")


def latency_quantile(plan: Plan, service: str, quantile: float, window: str = WINDOW) -> str:
    """PromQL: a latency quantile of one service, in seconds."""
    return (f"histogram_quantile({_num(quantile)}, sum by (le) "
            f"(rate(http_request_duration_seconds_bucket{_sel(plan, service)}[{window}])))")


def rule_groups(plan: Plan) -> list[Obj]:
    """Prometheus rule groups: per-service alerts of the seeds, queue backlog, SLO burn rates."""
    alerts = plan.alerts
    rules: list[Obj] = []
    for w in plan.workloads:
        common = {"service": w.name, "namespace": plan.namespace, "app": plan.app,
                  "environment": plan.environment}
        if w.metrics_port is not None:
            rules.append({
                "alert": "HighErrorRate",
                "expr": f"({error_ratio(plan, w.name)}) > {_num(alerts.error_rate)}",
                "for": "5m",
                "labels": {**common, "severity": "critical"},
                "annotations": {
                    "summary": f"{w.name}: more than {_num(alerts.error_rate * 100)}% of requests fail",
                    "description": "5xx share over 5 minutes is {{ $value | humanizePercentage }}.",
                    "runbook": f"shipmate rollout status --env {plan.environment}; "
                               f"shipmate rollback --env {plan.environment}",
                },
            })
            rules.append({
                "alert": "HighLatency",
                "expr": f"{latency_quantile(plan, w.name, 0.99)} > {_num(alerts.latency_p99_seconds)}",
                "for": "5m",
                "labels": {**common, "severity": "warning"},
                "annotations": {
                    "summary": f"{w.name}: p99 latency above {_num(alerts.latency_p99_seconds)}s",
                    "description": "p99 over 5 minutes is {{ $value | humanizeDuration }}.",
                },
            })
        rules.append({
            "alert": "ServiceDown",
            "expr": f"absent(up{_sel(plan, w.name)} == 1)",
            "for": alerts.service_down_for,
            "labels": {**common, "severity": "critical"},
            "annotations": {"summary": f"{w.name}: no instance is up",
                            "description": f"No scrape target of {w.name} has answered for "
                                           f"{alerts.service_down_for}."},
        })
    if alerts.queue_backlog_metric and alerts.queue_backlog_threshold:
        rules.append({
            "alert": "QueueBacklog",
            "expr": f'sum({alerts.queue_backlog_metric}{{namespace="{plan.namespace}"}}) > '
                    f"{alerts.queue_backlog_threshold}",
            "for": "10m",
            "labels": {"namespace": plan.namespace, "app": plan.app, "environment": plan.environment,
                       "severity": "warning"},
            "annotations": {"summary": f"more than {alerts.queue_backlog_threshold} messages wait",
                            "description": "Backlog is {{ $value }} messages."},
        })
    groups: list[Obj] = [{"name": f"{plan.app}.alerts", "rules": rules}]
    slo_rules: list[Obj] = []
    for slo in plan.slos:
        budget = 1 - slo.objective / 100
        ratio = f"slo:{slo.name.replace('-', '_')}:error_ratio"
        for window in ("5m", "1h", "6h"):
            slo_rules.append({"record": f"{ratio}{window}", "expr": error_ratio(plan, slo.service, window)})
        labels = {"slo": slo.name, "service": slo.service, "namespace": plan.namespace, "app": plan.app}
        slo_rules.append({
            "alert": "ErrorBudgetBurnFast",
            "expr": f"{ratio}1h > {_num(14.4 * budget)} and {ratio}5m > {_num(14.4 * budget)}",
            "for": "2m",
            "labels": {**labels, "severity": "critical"},
            "annotations": {"summary": f"{slo.name}: error budget of {_num(slo.objective)}% burns 14x too fast"},
        })
        slo_rules.append({
            "alert": "ErrorBudgetBurnSlow",
            "expr": f"{ratio}6h > {_num(6 * budget)} and {ratio}1h > {_num(6 * budget)}",
            "for": "15m",
            "labels": {**labels, "severity": "warning"},
            "annotations": {"summary": f"{slo.name}: error budget of {_num(slo.objective)}% burns 6x too fast"},
        })
    if slo_rules:
        groups.append({"name": f"{plan.app}.slos", "rules": slo_rules})
    return groups


def dashboard(plan: Plan) -> Obj:
    """A Grafana dashboard: request rate, error share and p99 per service."""
    panels: list[Obj] = []
    y = 0
    for index, w in enumerate(w for w in plan.workloads if w.metrics_port is not None):
        targets = [
            ("requests/s", f"sum(rate(http_requests_total{_sel(plan, w.name)}[{WINDOW}]))", "reqps"),
            ("5xx share", error_ratio(plan, w.name), "percentunit"),
            ("p99 latency", latency_quantile(plan, w.name, 0.99), "s"),
        ]
        for col, (title, expr, unit) in enumerate(targets):
            panels.append({
                "id": index * 3 + col + 1,
                "type": "timeseries",
                "title": f"{w.name}: {title}",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"x": col * 8, "y": y, "w": 8, "h": 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"expr": expr, "refId": "A", "legendFormat": w.name}],
            })
        y += 8
    return {
        "title": f"{plan.app} ({plan.environment})",
        "uid": f"shipmate-{plan.instance}"[:40],
        "tags": ["shipmate", plan.app, plan.environment],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


def objects(plan: Plan, meta: dict[str, str]) -> list[Obj]:
    """PrometheusRule and the dashboard ConfigMap (picked up by Grafana's sidecar)."""
    rule = {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
        "metadata": {"name": f"{plan.app}-alerts", "namespace": plan.namespace, "labels": meta},
        "spec": {"groups": rule_groups(plan)},
    }
    board = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{plan.app}-dashboard", "namespace": plan.namespace,
                     "labels": {**meta, "grafana_dashboard": "1"}},
        "data": {f"{plan.app}.json": json.dumps(dashboard(plan), indent=2, sort_keys=True) + "\n"},
    }
    return [rule, board]
