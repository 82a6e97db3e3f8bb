"""Metrics providers for analysis checks that the router's own counters cannot answer.

Called by the engine once per analysis run, for each check whose metric is `promql` or `webhook`
(the built-in error rate, latency and request rate come from the router, `analysis.py`). I/O edge:
HTTP to loopback or to the URLs the spec names, bounded by a timeout, in a worker thread.

- `promql`: the check's `query` is sent to the Prometheus HTTP API (`/api/v1/query`), with
  `{{version}}` replaced by the new version's label, `{{service}}` by the services that move
  (a regular expression alternation) and `{{interval}}` by the run's interval (`30s`); the value is
  the first sample of the result (None when the result is empty or the server cannot be reached:
  inconclusive, never a pass).
- `webhook`: the check's `url` gets a POST of `{"rollout", "environment", "version", "services",
  "check"}`; a 2xx answer is a pass (1.0), any other answer a fail (0.0), no answer inconclusive.
"""

from __future__ import annotations

import asyncio
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from shipmate.plan.models import CheckPlan

TIMEOUT = 5.0


@dataclass(frozen=True)
class Context:
    """What a provider may need to know about the run it measures."""

    rollout: str
    environment: str
    version: str
    services: tuple[str, ...]
    interval_seconds: float
    prometheus_url: str | None


async def fetch(checks: Sequence[CheckPlan], context: Context) -> dict[str, float | None]:
    """check name -> value for every promql and webhook check."""
    out: dict[str, float | None] = {}
    for check in checks:
        if check.metric == "promql" and check.query:
            out[check.name] = await asyncio.to_thread(_promql, check.query, context)
        elif check.metric == "webhook" and check.url:
            out[check.name] = await asyncio.to_thread(_webhook, check, context)
    return out


def _promql(query: str, context: Context) -> float | None:
    if context.prometheus_url is None:
        return None
    text = (query.replace("{{version}}", context.version)
            .replace("{{service}}", "|".join(context.services))
            .replace("{{interval}}", f"{max(1, round(context.interval_seconds))}s"))
    url = f"{context.prometheus_url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': text})}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:  # noqa: S310 - the addon's URL
            data = json.loads(response.read())
    except (OSError, ValueError):
        return None
    result = data.get("data", {}).get("result", []) if isinstance(data, dict) else []
    if not result:
        return None
    first = result[0]
    sample = first.get("value") if isinstance(first, dict) else None
    try:
        value = float(sample[1]) if isinstance(sample, list) and len(sample) == 2 else float(first)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _webhook(check: CheckPlan, context: Context) -> float | None:
    if not (check.url or "").startswith(("http://", "https://")):
        return None  # only HTTP(S) webhooks; anything else cannot be judged
    body = json.dumps({"rollout": context.rollout, "environment": context.environment, "version": context.version,
                       "services": list(context.services), "check": check.name}).encode()
    request = urllib.request.Request(check.url or "", data=body, method="POST",  # noqa: S310 - http(s) only
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 - a URL of the spec
            return 1.0 if 200 <= response.status < 300 else 0.0
    except urllib.error.HTTPError as error:
        error.close()
        return 0.0
    except (OSError, ValueError):
        return None
