"""Where each service's image is built from and which registry it is pushed to.

Called by the `github-actions` format (the image build job) and the `compose` format (`build:`),
so that CI and a laptop build the same image from the same place. Pure: it reads the plan only,
never the file system, so it cannot check that a Dockerfile exists; the generated files say what
they expect instead.

The convention (the spec has no build section): a service with `workdir` is built from
`<workdir>/Dockerfile` with `<workdir>` as the context, because that is where its code lives on the
local target; any other service is built from `./Dockerfile` at the repository root with the
build argument `SERVICE=<name>`, so one Dockerfile can serve several services of one code base.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shipmate.plan.models import Workload

DOCKER_HUB = "docker.io"
_ECR = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")


@dataclass(frozen=True)
class Build:
    """How to build one service's image."""

    service: str
    image: str
    context: str
    dockerfile: str
    args: tuple[tuple[str, str], ...]


def build(w: Workload) -> Build:
    """The build of one workload, by the convention in the module docstring."""
    if w.workdir:
        workdir = w.workdir.rstrip("/") or "."
        if workdir.startswith("./") and len(workdir) > 2:
            workdir = workdir[2:]
        dockerfile = "Dockerfile" if workdir == "." else f"{workdir}/Dockerfile"
        return Build(w.name, w.image, workdir, dockerfile, ())
    return Build(w.name, w.image, ".", "Dockerfile", (("SERVICE", w.name),))


def registry(image: str) -> str:
    """The registry host of an image repository (`docker.io` when the first part is no host)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def ecr_region(host: str) -> str | None:
    """The AWS region of an Amazon ECR registry host, or None for any other registry."""
    match = _ECR.match(host)
    return match.group("region") if match else None
