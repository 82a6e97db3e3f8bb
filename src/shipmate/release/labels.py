"""Labels: the name of one set of instances of a service, derived from what they run.

A label is `<version>-<hash>` where the hash covers the service's resolved workload and version:
two releases that run a service identically give it the same label (a rollout leaves it alone),
and a change of config, image, command or version gives a new one (like the pod-template-hash of
a Kubernetes ReplicaSet). Pure.
"""

from __future__ import annotations

import hashlib
import json

from shipmate.release.codec import to_json
from shipmate.release.models import Release


def label(release: Release, service: str) -> str:
    """The label of `service` in `release`."""
    workload = release.workload(service)
    version = release.version_of(service)
    text = json.dumps([to_json(workload), version], sort_keys=True, separators=(",", ":"))
    return f"{version}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def labels(release: Release) -> dict[str, str]:
    """service -> label for every service of a release."""
    return {name: label(release, name) for name in release.services}
