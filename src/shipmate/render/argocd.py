"""The `argocd` format: one Argo CD Application per Kubernetes environment, and their AppProject.

Called through `shipmate.render.formats` (`shipmate render --format argocd`). Pure: it reads
the plans and objects of the kit and computes text; it talks to no Argo CD, no git and no
cluster, and it never re-renders a plan.

Files:
    appproject.yaml            the AppProject `<app>`: the source repositories the Applications
                               use, their destinations (cluster and namespace), and only the
                               kinds the environments render (cluster-scoped and namespaced)
    application-<env>.yaml     the Application `<app>-<env>` of each environment whose target is
                               kubernetes (local environments have nothing for Argo CD to do)

Where an Application points: `environments.<env>.gitops` names a repository, a revision and
`path`, the directory that `shipmate render --format all --out <path>` wrote into it. So a
`kustomize` source is `<path>/kustomize/overlays/<env>` and a `helm` source is
`<path>/helm/<app>` with `values-<env>.yaml`. Without a gitops block the source is the app's own
repository (`app.repo`, else a placeholder that says so) at `deploy/kustomize/overlays/<env>`,
HEAD, synced by hand; the file's header says what to set.

The destination cluster is the environment's kube context by name (`argocd cluster add
<context>` registers a cluster under that name), else the cluster Argo CD runs in.
"""

from __future__ import annotations

import posixpath
from typing import Any

from shipmate.plan.models import Plan
from shipmate.render.kit import Kit
from shipmate.render.yamlio import dump

Obj = dict[str, Any]

API_VERSION = "argoproj.io/v1alpha1"
ARGOCD_NAMESPACE = "argocd"
IN_CLUSTER = "https://kubernetes.default.svc"
FINALIZER = "resources-finalizer.argocd.argoproj.io"
SYNC_OPTIONS = ("CreateNamespace=true", "ServerSideApply=true", "PruneLast=true")
RETRY_LIMIT, BACKOFF, BACKOFF_FACTOR, BACKOFF_MAX = 5, "10s", 2, "5m"
FALLBACK_PATH = "deploy"
HEADER = "# Rendered by shipmate from shipmate.yaml; do not edit.\n"
# Kinds Kubernetes serves cluster-scoped, among those render can produce.
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                            "PriorityClass", "IngressClass", "RuntimeClass", "CustomResourceDefinition"})


def files(kit: Kit) -> dict[str, str]:
    out: dict[str, str] = {}
    environments = kit.kubernetes_environments
    if not environments:
        return out
    out["appproject.yaml"] = HEADER + dump(project(kit))
    for env in environments:
        plan = kit.plans[env]
        note = ""
        if plan.gitops is None:
            what = "the app repository (app.repo)" if plan.repo else "a placeholder: set app.repo"
            note = (f"# Environment {env!r} has no gitops block, so the source is {what},\n"
                    f"# path {source(plan)['path']}, and it syncs only by hand. "
                    f"Set environments.{env}.gitops to change that.\n")
        out[f"application-{env}.yaml"] = HEADER + note + dump(application(plan))
    return dict(sorted(out.items()))


def _labels(plan: Plan, instance: str) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/managed-by": "shipmate",
        "app.kubernetes.io/name": plan.app,
        "app.kubernetes.io/part-of": plan.app,
    }
    if plan.team:
        labels["shipmate.dev/team"] = plan.team
    return labels


def _repo(plan: Plan) -> str:
    if plan.gitops is not None:
        return plan.gitops.repo
    return plan.repo or f"https://git.example.com/replace-me/{plan.app}.git"


def _destination(plan: Plan) -> dict[str, str]:
    target = {"name": plan.context} if plan.context else {"server": IN_CLUSTER}
    return {**target, "namespace": plan.namespace}


def source(plan: Plan) -> Obj:
    """Where the Application of one environment reads its manifests."""
    gitops = plan.gitops
    if gitops is None:
        return {"repoURL": _repo(plan), "targetRevision": "HEAD",
                "path": _join(FALLBACK_PATH, "kustomize", "overlays", plan.environment)}
    out: Obj = {"repoURL": gitops.repo, "targetRevision": gitops.revision}
    if gitops.format == "helm":
        out["path"] = _join(gitops.path, "helm", plan.app)
        out["helm"] = {"releaseName": plan.app, "valueFiles": [f"values-{plan.environment}.yaml"]}
    else:
        out["path"] = _join(gitops.path, "kustomize", "overlays", plan.environment)
    return out


def _join(*parts: str) -> str:
    """A repository-relative path: no leading slash, no `.` segments."""
    path = posixpath.normpath(posixpath.join(*(p.strip("/") for p in parts if p.strip("/"))))
    return "" if path == "." else path


def application(plan: Plan) -> Obj:
    """The Argo CD Application of one Kubernetes environment."""
    retry = {"limit": RETRY_LIMIT,
             "backoff": {"duration": BACKOFF, "factor": BACKOFF_FACTOR, "maxDuration": BACKOFF_MAX}}
    sync: Obj = {"syncOptions": list(SYNC_OPTIONS), "retry": retry}
    if plan.gitops is not None and plan.gitops.auto_sync:
        sync["automated"] = {"prune": plan.gitops.prune, "selfHeal": plan.gitops.self_heal}
    info = [{"name": "environment", "value": plan.environment}]
    if plan.promote_from:
        info.append({"name": "promoted from", "value": plan.promote_from})
    if plan.approvals_required:
        info.append({"name": "approvals", "value": f"{plan.approvals_required} "
                     f"({', '.join(plan.approval_roles) or 'any role'})"})
    return {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "metadata": {
            "name": plan.instance,
            "namespace": ARGOCD_NAMESPACE,
            "labels": {**_labels(plan, plan.instance), "shipmate.dev/environment": plan.environment},
            "finalizers": [FINALIZER],
        },
        "spec": {
            "project": plan.app,
            "source": source(plan),
            "destination": _destination(plan),
            "syncPolicy": sync,
            "revisionHistoryLimit": plan.history,
            "info": info,
        },
    }


def project(kit: Kit) -> Obj:
    """The AppProject of the app: only its repositories, namespaces and kinds."""
    plans = [kit.plans[env] for env in kit.kubernetes_environments]
    first = plans[0]
    kinds = {(o["apiVersion"].rpartition("/")[0], o["kind"]) for env in kit.kubernetes_environments
             for o in kit.objects[env]}
    cluster = sorted(k for k in kinds if k[1] in CLUSTER_SCOPED)
    namespaced = sorted(k for k in kinds if k[1] not in CLUSTER_SCOPED)
    destinations = sorted({tuple(sorted(_destination(p).items())) for p in plans})
    return {
        "apiVersion": API_VERSION,
        "kind": "AppProject",
        "metadata": {
            "name": kit.app,
            "namespace": ARGOCD_NAMESPACE,
            "labels": _labels(first, kit.app),
            "finalizers": [FINALIZER],
        },
        "spec": {
            "description": f"{kit.app}: environments {', '.join(kit.kubernetes_environments)}, "
                           "rendered by shipmate",
            "sourceRepos": sorted({_repo(p) for p in plans}),
            "destinations": [dict(d) for d in destinations],
            "clusterResourceWhitelist": [{"group": g, "kind": k} for g, k in cluster],
            "namespaceResourceWhitelist": [{"group": g, "kind": k} for g, k in namespaced],
            "orphanedResources": {"warn": True},
        },
    }
