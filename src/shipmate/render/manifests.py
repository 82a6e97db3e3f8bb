"""The `manifests` format: one multi-document YAML file per environment, in apply order.

`kubectl apply -f manifests/<env>.yaml` (or server-side apply) takes it as it is. Pure.
"""

from __future__ import annotations

from shipmate.render.kit import Kit
from shipmate.render.yamlio import dump_all

HEADER = "# Rendered by shipmate from {file}; do not edit. Environment: {env}.\n"


def files(kit: Kit) -> dict[str, str]:
    return {f"{env}.yaml": HEADER.format(file="shipmate.yaml", env=env) + dump_all(kit.objects[env])
            for env in kit.environments}
