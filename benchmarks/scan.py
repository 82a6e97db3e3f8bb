"""Scan benchmark: `shipmate scan` against Checkov on the real-world corpus (../shared/corpus).

Run with `.venv/bin/python benchmarks/scan.py` (also part of `make bench`); it writes the `## scan`
section of benchmarks/RESULTS.md and leaves every other section alone. `--profile CORPUS` prints
where one in-process scan of a corpus folder spends its time (cProfile) instead. This is a
measurement, never a test: nothing here asserts a time.

Checkov lives in its own virtualenv, `benchmarks/.venv-checkov` (created on first use with
`pip install checkov`; git-ignored and never in the project's lock file). It runs offline:
`--skip-download`, and the environment turns off its version check and its guideline download.

For each corpus folder, in the same run:
- wall time of `shipmate scan DIR --format json` and of `checkov -d DIR --framework kubernetes -o json
  --quiet --compact --skip-download`, each the median of `--runs` fresh processes (one run of
  Checkov when its first takes over 40 s), and each process's peak resident set (ru_maxrss from
  wait4, so every run is measured on its own);
- the number of resources each tool scanned (their own counts from the reports);
- the findings on matching rules (`MAPPING`): the (object, container) pairs each tool flags, for
  every Checkov check with a shipmate counterpart. A Checkov finding that shipmate does not make
  is explained from shipmate's reading of the same object (`explain`) or listed as unexplained.
  shipmate's side comes from an in-process scan of the same folder with SM202 (image digest, off
  by default) turned on, as Checkov checks digests by default.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results import replace_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CORPUS = ROOT.parent / "shared" / "corpus"
CHECKOV_VENV = ROOT / "benchmarks" / ".venv-checkov"
SHIPMATE = Path(sys.executable).parent / "shipmate"
SECTION = "scan"
FOLDERS = ("microservices-demo", "argo-cd", "prometheus-charts")
SLOW_SECONDS = 40.0
GOAL = 20.0
CHECKOV_ENV = {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "ERROR"}

# Checkov check -> (what it checks, the shipmate rules that flag the same thing)
MAPPING: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("CKV_K8S_8", "liveness probe", ("SM401",)),
    ("CKV_K8S_9", "readiness probe", ("SM402",)),
    ("CKV_K8S_10", "CPU request", ("SM301",)),
    ("CKV_K8S_11", "CPU limit", ("SM303",)),
    ("CKV_K8S_12", "memory request", ("SM302",)),
    ("CKV_K8S_13", "memory limit", ("SM304",)),
    ("CKV_K8S_14", "image tag fixed, not latest", ("SM201",)),
    ("CKV_K8S_43", "image digest", ("SM202",)),
    ("CKV_K8S_15", "image pull policy", ("SM203",)),
    ("CKV_K8S_16", "privileged", ("SM103",)),
    ("CKV_K8S_17", "host PID", ("SM109",)),
    ("CKV_K8S_18", "host IPC", ("SM110",)),
    ("CKV_K8S_19", "host network", ("SM111",)),
    ("CKV_K8S_20", "allowPrivilegeEscalation", ("SM104",)),
    ("CKV_K8S_21", "default namespace", ("SM902",)),
    ("CKV_K8S_22", "read-only root file system", ("SM105",)),
    ("CKV_K8S_23", "root containers", ("SM101", "SM102")),
    ("CKV_K8S_40", "high UID", ("SM101", "SM102")),
    ("CKV_K8S_25", "added capabilities", ("SM107",)),
    ("CKV_K8S_39", "CAP_SYS_ADMIN", ("SM107",)),
    ("CKV_K8S_28", "NET_RAW not dropped", ("SM106",)),
    ("CKV_K8S_37", "capabilities not minimised", ("SM106", "SM107")),
    ("CKV_K8S_26", "hostPort", ("SM113",)),
    ("CKV_K8S_27", "docker socket", ("SM112",)),
    ("CKV_K8S_31", "seccomp profile", ("SM108",)),
    ("CKV_K8S_35", "secrets as environment variables", ("SM705",)),
    ("CKV_K8S_38", "service-account token", ("SM114",)),
    ("CKV_K8S_49", "wildcards in roles", ("SM801", "SM802")),
    ("CKV_K8S_157", "bind permission", ("SM805",)),
    ("CKV_K8S_158", "escalate permission", ("SM805",)),
)
_SLOT = re.compile(r"(containers|initContainers|ephemeralContainers)(?:/\[|\[)(\d+)\]")
WORKLOADS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job",
             "CronJob"}

Key = tuple[str, str, str, tuple[str, int] | None]  # file (relative, with a leading /), kind, name, container


# --- running ----------------------------------------------------------------------------------

def ensure_checkov() -> Path:
    """The checkov executable of benchmarks/.venv-checkov, installing it there first if needed."""
    executable = CHECKOV_VENV / "bin" / "checkov"
    if not executable.exists():
        print(f"creating {CHECKOV_VENV} and installing checkov (a few minutes)...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=True).create(CHECKOV_VENV)
        subprocess.run([str(CHECKOV_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", "checkov"], check=True)
    return executable


def measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, int, bytes]:
    """Run `cmd` in a fresh process; (wall seconds, its peak RSS in KiB, exit code, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryDirectory(prefix="scan-bench-") as cwd:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.DEVNULL,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return wall, usage.ru_maxrss, proc.returncode, out.read()


@dataclass
class Timing:
    walls: list[float]
    rss_kib: list[int]
    output: bytes

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def rss(self) -> int:
        return max(self.rss_kib)


def timed(cmd: list[str], runs: int, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0, 1)) -> Timing:
    """`runs` runs of `cmd` (only one when the first takes over SLOW_SECONDS)."""
    timing = Timing([], [], b"")
    for _ in range(runs):
        wall, rss, code, output = measured(cmd, env)
        if code not in ok:
            raise SystemExit(f"{' '.join(cmd)} exited {code}")
        timing.walls.append(wall)
        timing.rss_kib.append(rss)
        timing.output = output
        if wall > SLOW_SECONDS:
            break
    return timing


def checkov_report(output: bytes) -> dict[str, Any]:
    data = json.loads(output or b"{}")
    reports = data if isinstance(data, list) else [data]
    for report in reports:
        if report.get("check_type") == "kubernetes":
            return dict(report)
    # no kubernetes report: Checkov found nothing it could read
    return {"summary": {"resource_count": 0}, "results": {"failed_checks": []}}


def checkov_version(executable: Path) -> str:
    done = subprocess.run([str(executable), "--version"], capture_output=True, text=True, check=False,
                          env={**os.environ, **CHECKOV_ENV})
    return done.stdout.strip() or "?"


# --- comparing findings -------------------------------------------------------------------------

@dataclass
class ShipmateView:
    """shipmate's reading of a folder: its objects and findings, keyed like Checkov's."""

    objects: dict[tuple[str, str, str], dict[str, Any]]
    findings: dict[str, set[Key]]
    resources: int
    chart_dirs: list[str]


def _slot(text: str) -> tuple[str, int] | None:
    match = _SLOT.search(text)
    return (match.group(1), int(match.group(2))) if match else None


def _relative(file: str, root: Path) -> str:
    return "/" + os.path.relpath(file, root)


def shipmate_view(root: Path) -> ShipmateView:
    from shipmate.policy.config import Policy, effective
    from shipmate.policy.engine import scan
    from shipmate.policy.sources import read_paths

    inputs = read_paths([str(root)])
    settings = effective(Policy.model_validate({"options": {"requireDigest": True}}), None)
    result = scan(inputs.resources, settings)
    objects = {(_relative(r.source.file, root), r.kind, r.name): r.obj for r in inputs.resources}
    findings: dict[str, set[Key]] = {}
    for f in result.findings:
        findings.setdefault(f.rule, set()).add((_relative(f.file, root), f.kind, f.name, _slot(f.path)))
    charts = sorted("/" + os.path.relpath(p.parent, root) + "/" for p in root.rglob("Chart.yaml"))
    return ShipmateView(objects, findings, len(inputs.resources), charts)


def _kind_name(resource: str) -> tuple[str, str]:
    """`Kind.namespace.name` (Checkov's resource id; namespace `default` when unset) -> kind, name."""
    kind, _, rest = resource.partition(".")
    return kind, rest.split(".", 1)[1] if "." in rest else rest


def checkov_findings(report: dict[str, Any], check: str) -> set[Key]:
    out: set[Key] = set()
    for item in report["results"]["failed_checks"]:
        if item["check_id"] != check:
            continue
        kind, name = _kind_name(str(item["resource"]))
        keys = item.get("check_result", {}).get("evaluated_keys") or []
        slot = next((s for s in (_slot(str(k)) for k in keys) if s is not None), None)
        out.add((str(item["file_path"]), kind, name, slot))
    return out


def _matches(key: Key, found: set[Key]) -> bool:
    file, kind, name, slot = key
    return any(f == file and k == kind and n == name and (slot is None or s is None or s == slot)
               for f, k, n, s in found)


def _pod(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":
        return dict(spec)
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec") or {})
    return dict(((spec.get("template") or {}).get("spec")) or {})


def _security(obj: dict[str, Any], slot: tuple[str, int] | None, key: str) -> Any:
    pod = _pod(obj)
    containers = pod.get(slot[0]) if slot else pod.get("containers")
    container = (containers or [{}])[slot[1] if slot else 0] if isinstance(containers, list) else {}
    value = ((container or {}).get("securityContext") or {}).get(key)
    return value if value is not None else (pod.get("securityContext") or {}).get(key)


def explain(check: str, key: Key, view: ShipmateView) -> str | None:
    """Why shipmate does not flag what Checkov flags here, from shipmate's reading of the object."""
    file, kind, name, slot = key
    obj = view.objects.get((file, kind, name))
    if obj is None:
        if any(file.startswith(chart) for chart in view.chart_dirs):
            return "Checkov read a raw Helm template; shipmate scanned the chart as Helm renders it"
        return None
    if "$patch" in obj:
        return (f"a strategic-merge patch (`$patch: {obj['$patch']}`), not a whole object: shipmate has no "
                "containers to check in it")
    if check == "CKV_K8S_21" and not (obj.get("metadata") or {}).get("namespace"):
        return ("no namespace in the file: Checkov counts it as `default`; SM902 flags only an explicit "
                "`namespace: default` (the namespace is chosen at apply time)")
    if check == "CKV_K8S_40" and (_security(obj, slot, "runAsNonRoot") is True
                                  or str(_security(obj, slot, "runAsUser") or "0") != "0"):
        return "non-root with a uid below 10000: shipmate has no high-uid rule (SM101/SM102 pass)"
    if check == "CKV_K8S_38":
        pod = _pod(obj)
        account = pod.get("serviceAccountName") or pod.get("serviceAccount") or "default"
        namespace = (obj.get("metadata") or {}).get("namespace")
        for (_, other_kind, other_name), other in view.objects.items():
            if other_kind == "ServiceAccount" and other_name == account \
                    and (other.get("metadata") or {}).get("namespace") == namespace \
                    and other.get("automountServiceAccountToken") is False:
                return "the pod's ServiceAccount turns the token off; Checkov looks at the pod only"
    if check in ("CKV_K8S_157", "CKV_K8S_158") and (file, kind, name, None) in view.findings.get("SM801", set()):
        return ("the role grants every verb (`verbs: ['*']`), which shipmate reports once, as SM801, not again "
                "as SM805 (which looks for escalate, bind and impersonate by name)")
    if check == "CKV_K8S_15":
        return ("SM203 accepts IfNotPresent (or unset) with a pinned tag or digest; Checkov wants Always "
                "everywhere")
    if check in ("CKV_K8S_43", "CKV_K8S_14") and kind not in WORKLOADS:
        return f"{kind} is not a workload kind shipmate reads pods from"
    return None


def extra(key: Key, theirs: set[Key], reported: set[tuple[str, str, str]], view: ShipmateView) -> str:
    """Why shipmate flags what Checkov does not (the mechanics; the rules themselves also differ)."""
    file, kind, name, slot = key
    if any(file.startswith(chart) for chart in view.chart_dirs):
        return ("an object of a Helm chart folder, which shipmate renders and Checkov reads in part or not at "
                "all")
    if any((f, k, n) == (file, kind, name) for f, k, n, _ in theirs):
        return ("another container (often an init container) of an object Checkov flags for this check: Checkov "
                "reports only the first failing container of an object")
    if (file, kind, name) not in reported:
        return "an object Checkov reports nothing on at all"
    if slot is not None and slot[0] != "containers":
        return "an init container Checkov does not flag for this check"
    return "a rule of shipmate's that is stricter than Checkov's check"


def compare(report: dict[str, Any], view: ShipmateView) -> list[dict[str, Any]]:
    reported = {(str(item["file_path"]), *_kind_name(str(item["resource"])))
                for item in report["results"]["failed_checks"]}
    rows = []
    for check, what, rules in MAPPING:
        theirs = checkov_findings(report, check)
        ours = set().union(*(view.findings.get(rule, set()) for rule in rules))
        both = {k for k in theirs if _matches(k, ours)}
        missed = sorted(theirs - both, key=str)
        reasons = Counter(explain(check, k, view) or "UNEXPLAINED" for k in missed)
        unexplained = [k for k in missed if explain(check, k, view) is None]
        surplus = [k for k in ours if not _matches(k, theirs)]
        rows.append({"check": check, "what": what, "rules": rules, "checkov": len(theirs), "shipmate": len(ours),
                     "both": len(both), "only_checkov": len(missed), "reasons": dict(reasons),
                     "unexplained": [list(map(str, k)) for k in unexplained],
                     "only_shipmate": len(surplus),
                     "extras": dict(Counter(extra(k, theirs, reported, view) for k in surplus))})
    return rows


# --- the run ------------------------------------------------------------------------------------

def bench(runs: int, corpus: Path) -> dict[str, Any]:
    checkov = ensure_checkov()
    data: dict[str, Any] = {"runs": runs, "checkov_version": checkov_version(checkov),
                            "load_average": [load_average()], "corpora": []}
    for folder in FOLDERS:
        root = corpus / folder
        print(f"{folder}: shipmate...", file=sys.stderr)
        ours = timed([str(SHIPMATE), "scan", str(root), "--format", "json"], runs)
        print(f"{folder}: checkov...", file=sys.stderr)
        theirs = timed([str(checkov), "-d", str(root), "--framework", "kubernetes", "-o", "json", "--quiet",
                        "--compact", "--skip-download"], runs, CHECKOV_ENV)
        report = checkov_report(theirs.output)
        view = shipmate_view(root)
        summary = json.loads(ours.output)["summary"]
        data["corpora"].append({
            "folder": folder, "shipmate": ours, "checkov": theirs, "stages": stages(root, runs),
            "shipmate_resources": summary["resources"], "shipmate_findings": summary["findings"],
            "checkov_resources": report["summary"].get("resource_count", 0),
            "checkov_failed": len(report["results"]["failed_checks"]),
            "comparison": compare(report, view),
        })
    data["load_average"].append(load_average())
    return data


# --- the report ---------------------------------------------------------------------------------

def _s(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def machine() -> str:
    cpu = "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), "?")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from shipmate import __version__

    return (f"nproc {usable} ({cpu}), {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, shipmate {__version__}")


def load_average() -> str:
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def report(data: dict[str, Any]) -> str:
    corpora = data["corpora"]
    single = [c["folder"] for c in corpora if len(c["checkov"].walls) < data["runs"]]
    lines = [
        f"## {SECTION}",
        "",
        f"Reproduce with `.venv/bin/python benchmarks/scan.py` (part of `make bench`); measured "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}. Each figure is the median of {data['runs']} runs, each "
        "in a fresh process" + (f" (one run of Checkov on {', '.join(single)}, as it takes over "
                                f"{SLOW_SECONDS:.0f} s)" if single else "")
        + "; memory is the peak resident set of the process (ru_maxrss from wait4).",
        "",
        f"Machine: {machine()}, Checkov {data['checkov_version']} (in `benchmarks/.venv-checkov`); "
        f"1-minute load average {data['load_average'][0]} before the run, {data['load_average'][1]} after.",
        "",
        "Commands, for each folder DIR of `../shared/corpus`:",
        "",
        "```",
        "shipmate scan DIR --format json",
        "CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE \\",
        "  checkov -d DIR --framework kubernetes -o json --quiet --compact --skip-download",
        "```",
        "",
        "(`--skip-download` and the two variables keep Checkov offline: otherwise it asks PyPI for a newer "
        "version and Prisma Cloud for guidelines at every start, and waits for them to fail here.)",
        "",
        "| corpus | shipmate | shipmate memory | shipmate resources | Checkov | Checkov memory | Checkov resources "
        "| speed-up | 20x |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for c in corpora:
        ours, theirs = c["shipmate"], c["checkov"]
        speed = theirs.wall / ours.wall
        lines.append(f"| {c['folder']} | {_s(ours.wall)} | {_mib(ours.rss)} | {c['shipmate_resources']} | "
                     f"{_s(theirs.wall)}{' (1 run)' if c['folder'] in single else ''} | {_mib(theirs.rss)} | "
                     f"{c['checkov_resources']} | {speed:,.1f}x | {'met' if speed >= GOAL else '**missed**'} |")
    lines += [
        "",
        "Resources are each tool's own count: shipmate counts every object it read (Helm charts rendered; "
        "a Kustomize base or overlay found while walking a folder is read file by file, its "
        "kustomization.yaml skipped); Checkov counts the objects it parsed (it skips Helm templates that are "
        "not plain YAML, and reads none of prometheus-charts).",
        "",
        "### Findings on matching rules",
        "",
        "For each Checkov check with a shipmate counterpart, the (object, container) pairs flagged, summed "
        "over the three folders: by Checkov, by shipmate, by both, and those only Checkov flags, which are "
        "explained below. shipmate's side is a scan with SM202 (image digest) turned on, as Checkov checks "
        "digests by default.",
        "",
        "| Checkov | what | shipmate | Checkov | shipmate | both | only Checkov (explained) | only shipmate |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    totals: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {}
    unexplained: list[str] = []
    extras: Counter[str] = Counter()
    for check, what, rules in MAPPING:
        rows = [r for c in corpora for r in c["comparison"] if r["check"] == check]
        sums = {k: sum(r[k] for r in rows) for k in ("checkov", "shipmate", "both", "only_checkov", "only_shipmate")}
        explained = sums["only_checkov"] - sum(len(r["unexplained"]) for r in rows)
        totals.update(sums)
        totals["explained"] += explained
        for r in rows:
            extras.update(r["extras"])
            for reason, n in r["reasons"].items():
                if reason != "UNEXPLAINED":
                    reasons.setdefault(reason, Counter())[check] += n
            unexplained += [f"{check}: {' '.join(k)}" for k in r["unexplained"]]
        lines.append(f"| {check} | {what} | {', '.join(rules)} | {sums['checkov']} | {sums['shipmate']} | "
                     f"{sums['both']} | {sums['only_checkov']} ({explained}) | {sums['only_shipmate']} |")
    lines += [
        f"| **all** | | | **{totals['checkov']}** | **{totals['shipmate']}** | **{totals['both']}** | "
        f"**{totals['only_checkov']} ({totals['explained']})** | **{totals['only_shipmate']}** |",
        "",
        "Why Checkov flags what shipmate does not:",
        "",
        *(f"- {reason}: {sum(n.values())} ({', '.join(f'{k} {v}' for k, v in sorted(n.items()))})"
          for reason, n in sorted(reasons.items(), key=lambda kv: -sum(kv[1].values()))),
        *(["- unexplained:", *(f"  - {u}" for u in unexplained)] if unexplained else
          ["- nothing else: every other Checkov finding on a matching check is also a shipmate finding."]),
        "",
        "Why shipmate flags what Checkov does not:",
        "",
        *(f"- {reason}: {n}" for reason, n in extras.most_common()),
        "",
        "Per folder (`only Checkov` in brackets):",
        "",
    ]
    for c in corpora:
        parts = [f"{r['check']} {r['checkov']}/{r['shipmate']}/{r['both']} ({r['only_checkov']})"
                 for r in c["comparison"] if r["checkov"] or r["shipmate"]]
        lines.append(f"- {c['folder']}: Checkov {c['checkov_failed']} failed checks in all, shipmate "
                     f"{c['shipmate_findings']} findings in all; matching (Checkov/shipmate/both): "
                     + (", ".join(parts) or "none"))
    speeds = {c["folder"]: c["checkov"].wall / c["shipmate"].wall for c in corpora}
    missed = [f for f, s in speeds.items() if s < GOAL]
    names = [*STAGES, "start and exit", "total"]
    lines += [
        "",
        "### Where shipmate's time goes",
        "",
        "One scan per fresh process, timed stage by stage (`CHILD` in benchmarks/scan.py), median of "
        f"{data['runs']}: the imports of `shipmate.cli.main` and `shipmate.cli.scan`; loading the native Helm "
        "engine (`helm_python`, only when the folder holds a chart); reading (walking, rendering charts, parsing "
        "YAML); the rules; finding each finding's line; the JSON report; and the rest of the process's wall "
        "time (the interpreter starting and exiting). The figure for Checkov divided by 20 is the budget.",
        "",
        "| corpus | " + " | ".join(names) + " | Checkov / 20 |",
        "| --- |" + " ---: |" * (len(names) + 1),
        *(f"| {c['folder']} | " + " | ".join(_s(c["stages"][n]) for n in names)
          + f" | {_s(c['checkov'].wall / GOAL)} |" for c in corpora),
    ]
    for c in corpora:
        st, budget = c["stages"], c["checkov"].wall / GOAL
        fixed = st["imports"] + st["helm engine"] + st["start and exit"]
        if c["folder"] in missed:
            lines += ["", f"On {c['folder']} the budget is {_s(budget)}: the fixed costs (imports "
                      f"{_s(st['imports'])}, the Helm engine {_s(st['helm engine'])}, start and exit "
                      f"{_s(st['start and exit'])}) come to {_s(fixed)}"
                      + (", over the budget before a file is read" if fixed >= budget else "")
                      + f"; reading takes {_s(st['read'])}"
                      + (" (Helm rendering its charts)" if st["helm engine"] > 0 else "") + "."]
    lines += [
        "",
        f"Goal: at least {GOAL:.0f}x faster than Checkov on the same files: "
        + (f"**met** on every folder ({', '.join(f'{f} {s:,.1f}x' for f, s in speeds.items())})." if not missed
           else f"**missed** on {', '.join(f'{f} ({speeds[f]:,.1f}x)' for f in missed)}; met on "
           + (", ".join(f"{f} ({s:,.1f}x)" for f, s in speeds.items() if s >= GOAL) or "none") + "."),
        "",
    ]
    return "\n".join(lines)




STAGES = ("imports", "helm engine", "read", "rules", "lines", "report")


# one scan of sys.argv[1], timed stage by stage, run with `python -c` so that nothing but what
# the command imports is loaded (this file's own imports would count as start-up)
CHILD = """
import json, sys, time
from pathlib import Path
marks = [time.perf_counter()]
import shipmate.cli.main, shipmate.cli.scan
marks.append(time.perf_counter())
root = Path(sys.argv[1])
if any(root.rglob("Chart.yaml")):
    import helm_python
marks.append(time.perf_counter())
from shipmate.policy import report
from shipmate.policy.engine import scan
from shipmate.policy.models import Severity
from shipmate.policy.sources import read_paths
inputs = read_paths([str(root)])
marks.append(time.perf_counter())
result = scan(inputs.resources)
marks.append(time.perf_counter())
for finding in result.findings:
    inputs.locate(finding)
marks.append(time.perf_counter())
report.to_json(result, Severity.HIGH)
marks.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(marks, marks[1:])]))
"""


def stages(root: Path, runs: int) -> dict[str, float]:
    """Median seconds of each stage of a scan in a fresh process; `start and exit` is the rest of
    the process's wall time (the interpreter starting, and exiting)."""
    samples = []
    for _ in range(runs):
        wall, _, code, output = measured([sys.executable, "-c", CHILD, str(root)])
        if code != 0:
            raise SystemExit(f"the timed scan of {root} exited {code}")
        figures = dict(zip(STAGES, json.loads(output), strict=True))
        figures["start and exit"] = wall - sum(figures.values())
        figures["total"] = wall
        samples.append(figures)
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def profile(root: Path) -> None:
    """Where one in-process scan of `root` spends its time (the imports are already done)."""
    from shipmate.policy.engine import scan
    from shipmate.policy.sources import read_paths

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    inputs = read_paths([str(root)])
    read = time.perf_counter()
    result = scan(inputs.resources)
    scanned = time.perf_counter()
    for finding in result.findings:
        inputs.locate(finding)
    profiler.disable()
    located = time.perf_counter()
    print(f"read {read - started:.3f} s, rules {scanned - read:.3f} s, lines {located - scanned:.3f} s "
          f"({len(inputs.resources)} objects, {len(result.findings)} findings; times include the profiler)")
    for order in ("cumulative", "tottime"):
        pstats.Stats(profiler).strip_dirs().sort_stats(order).print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the corpus folder (../shared/corpus)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file to update")
    parser.add_argument("--profile", metavar="FOLDER", help="print a cProfile of one in-process scan of a folder")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--from-json", type=Path, help="write the results from figures saved with --json")
    args = parser.parse_args()
    if args.profile:
        profile(args.corpus / args.profile)
        return
    if args.from_json:
        data = json.loads(args.from_json.read_text(encoding="utf-8"))
        for c in data["corpora"]:
            c["shipmate"], c["checkov"] = (Timing(t["walls"], t["rss_kib"], b"") for t in (c["shipmate"], c["checkov"]))
    else:
        data = bench(args.runs, args.corpus)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2, default=lambda t: {"walls": t.walls, "rss_kib": t.rss_kib}),
                             encoding="utf-8")
    body = report(data)
    current = args.results.read_text(encoding="utf-8") if args.results.is_file() else ""
    args.results.write_text(replace_section(current, SECTION, body), encoding="utf-8")
    sys.stdout.write(body)


if __name__ == "__main__":
    main()
