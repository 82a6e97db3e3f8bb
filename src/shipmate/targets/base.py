"""The Target protocol: what the release engine asks of a place that runs workloads.

Implemented by the local target (`targets/local/runtime.py`: supervised processes behind routers)
and, in a later issue, by Kubernetes. The engine talks only to this protocol, so a rollout behaves
the same on both. A *label* names one set of instances of a service (a version of its workload,
see `shipmate.release.labels`); weights route traffic between labels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from shipmate.errors import ShipmateError
from shipmate.plan.models import Workload
from shipmate.targets.local.traffic import VersionSnapshot


class StepFailed(ShipmateError):
    """A step could not be carried out (instances never ready, a crash loop, a failed smoke check)."""


class Target(Protocol):
    async def scale(self, workload: Workload, version: str, label: str, replicas: int, *, within: float) -> None:
        """Exactly `replicas` ready instances of `workload` under `label` (`version` is the app version
        they report): start and wait until ready, or drain and stop. StepFailed when they are not
        ready `within` seconds or crash-loop."""
        ...

    def set_weights(self, service: str, weights: Mapping[str, float]) -> None:
        """Route the service's traffic between labels, in percent (the next request follows)."""
        ...

    def traffic(self, service: str, label: str) -> VersionSnapshot | None:
        """The label's request counters so far (None: the service has no router or no such label)."""
        ...

    async def smoke(self, service: str, label: str, checks: Sequence[str]) -> list[str]:
        """Request each path of `checks` from the label's instances; the failures, as sentences."""
        ...
