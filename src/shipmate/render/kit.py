"""The rendered kit: every environment's plan and objects, the input of every output format.

Called by the CLI and by the output formats. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shipmate.plan.models import Plan
from shipmate.plan.plan import resolve
from shipmate.render.objects import render
from shipmate.spec.loader import LoadedSpec

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kit:
    """One application: its environments (in spec order), their plans and their objects."""

    app: str
    environments: tuple[str, ...]
    plans: Mapping[str, Plan]
    objects: Mapping[str, list[Obj]]

    @property
    def kubernetes_environments(self) -> tuple[str, ...]:
        """The environments that run on Kubernetes (GitOps and CI only deploy these)."""
        return tuple(e for e in self.environments if self.plans[e].target == "kubernetes")


def build_kit(spec: LoadedSpec, environments: Sequence[str] | None = None) -> Kit:
    """Resolve and render the chosen environments (all, by default)."""
    names = tuple(environments) if environments else tuple(spec.base.environments)
    plans = {env: resolve(spec.for_env(env), env) for env in names}
    return Kit(app=spec.base.app.name, environments=names, plans=plans,
               objects={env: render(plan) for env, plan in plans.items()})
