"""Render benchmark: 200 services x 3 environments through load, plan and every output format,
against `kubectl kustomize` building the same Kustomize overlays.

Run with `make bench` (`.venv/bin/python benchmarks/render.py`); it writes the `## render` section
of benchmarks/RESULTS.md and leaves every other section alone. `--profile` prints where the
in-process time goes (cProfile) instead. This is a measurement, never a test: nothing here asserts
a time.

What is measured, each the median of `--runs` runs:
- shipmate in-process: `load_text` + `build_kit` (plan and objects of all 600 service-environments)
  + `formats.build(kit, list(FORMATS))` (every format, or those given with --formats), in a warm
  interpreter;
- shipmate in a fresh process: the same, plus interpreter start and imports, with the child's
  peak resident memory (ru_maxrss);
- `shipmate render --format all` through the console script: the above plus writing the files;
- `kubectl kustomize overlays/<env>` for the three environments of the kustomize output shipmate
  wrote, one after the other, with kustomize's peak memory; its output is checked to be the same
  objects shipmate renders, so both sides produce the same thing.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from results import replace_section

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "render"
ENVIRONMENTS = ("dev", "staging", "prod")
ADDONS = {
    "postgres": {"kind": "postgres", "version": "16.4", "storage": "20Gi", "databases": ["app"]},
    "redis": {"kind": "redis", "storage": "2Gi"},
    "nats": {"kind": "nats", "storage": "5Gi"},
    "rabbitmq": {"kind": "rabbitmq", "storage": "5Gi"},
}
ADDON_SECRETS = {"database-url": "postgres", "redis-url": "redis", "nats-url": "nats", "amqp-url": "rabbitmq"}
GOAL_SECONDS = 1.0
SLOW_KUSTOMIZE_SECONDS = 60.0


# --- the spec -------------------------------------------------------------------------------

def generate_spec(services: int = 200) -> str:
    """A deterministic shipmate.yaml of `services` services in dev, staging and prod.

    Every service has ports, config and secrets; most use an addon; every third calls two others;
    every tenth is exposed; every fourth autoscales; prod overrides every fifth.
    """
    names = [f"svc-{i:03d}" for i in range(services)]
    addon_names = list(ADDONS)
    secrets: dict[str, Any] = {name: {"from": {"addon": addon, "key": "url"}} for name, addon in ADDON_SECRETS.items()}
    spec_services: dict[str, Any] = {}
    prod_overrides: dict[str, Any] = {}
    for i, name in enumerate(names):
        uses = [addon_names[i % 4], addon_names[(i + 1) % 4]] if i % 5 else [addon_names[i % 4]]
        own_key = f"{name}-api-key"
        secrets[own_key] = {"generate": {"type": "hex", "length": 32}, "rotation": {"interval": "30d"}}
        addon_secrets = [s for s, addon in ADDON_SECRETS.items() if addon in uses]
        service: dict[str, Any] = {
            "run": f"python3 -m app.{name.replace('-', '_')}",
            "ports": [{"name": "http", "port": 8080}],
            "replicas": 2,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "500m", "memory": "512Mi"}},
            "config": {"LOG_LEVEL": "info", "WORKERS": 4 + i % 4, "FEATURE_FLAGS": f"a,b,{name}",
                       "REGION": "eu-west-1"},
            "secrets": [*addon_secrets, {"secret": own_key, "delivery": "env", "env": "API_KEY"}],
            "uses": uses,
        }
        if i % 7 == 0:
            service["ports"].append({"name": "grpc", "port": 9090, "protocol": "grpc"})
        if i % 3 == 0:
            service["calls"] = sorted({names[(i + 1) % services], names[(i + 7) % services]} - {name})
        if i % 10 == 0:
            service["expose"] = {"host": f"{name}.example.com", "path": "/"}
        if i % 4 == 0:
            service["autoscaling"] = {"minReplicas": 2, "maxReplicas": 8, "cpu": 75}
        if i % 5 == 0:
            prod_overrides[name] = {"replicas": 4, "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
        spec_services[name] = service
    spec = {
        "version": 1,
        "app": {"name": "bench", "version": "1.0.0", "registry": "ghcr.io/acme"},
        "services": spec_services,
        "addons": ADDONS,
        "secrets": secrets,
        "environments": {
            "dev": {"cluster": {"namespace": "bench-dev"}, "secretsDelivery": "secret",
                    "overrides": {"services": {n: {"replicas": 1, "autoscaling": None} for n in names}}},
            "staging": {"cluster": {"namespace": "bench-staging"}, "secretsDelivery": "external-secrets"},
            "prod": {"cluster": {"namespace": "bench-prod"}, "secretsDelivery": "csi",
                     "approvals": {"required": 1}, "promoteFrom": "staging",
                     "overrides": {"services": prod_overrides}},
        },
    }
    return yaml.safe_dump(spec, sort_keys=False, width=120)


# --- one shipmate run ------------------------------------------------------------------------

def render_once(text: str, formats: list[str]) -> dict[str, Any]:
    """Load, plan and render the formats once; times of each phase and what came out."""
    from shipmate.render.formats import build
    from shipmate.render.kit import build_kit
    from shipmate.spec.loader import load_text

    t0 = time.perf_counter()
    spec = load_text(text, "shipmate.yaml", {})
    t1 = time.perf_counter()
    kit = build_kit(spec)
    t2 = time.perf_counter()
    files = build(kit, formats)
    t3 = time.perf_counter()
    return {
        "load": t1 - t0, "plan_render": t2 - t1, "formats": t3 - t2, "total": t3 - t0,
        "service_environments": sum(len(kit.plans[e].workloads) for e in kit.environments),
        "objects": sum(len(kit.objects[e]) for e in kit.environments),
        "files": len(files), "bytes": sum(len(t.encode()) for t in files.values()),
    }


def peak_rss_kib() -> int:
    """This process's peak resident set: VmHWM (per address space, so it starts again at exec),
    else ru_maxrss."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(spec_path: str, formats: list[str]) -> None:
    """`--child SPEC`: one cold run in this fresh process; prints its figures as JSON."""
    started = time.perf_counter()
    figures = render_once(Path(spec_path).read_text(encoding="utf-8"), formats)
    figures["process"] = time.perf_counter() - started
    figures["maxrss_kib"] = peak_rss_kib()
    print(json.dumps(figures))


def measured(cmd: list[str], cwd: Path | None = None) -> tuple[float, int, str]:
    """Run `cmd`; (wall seconds, peak RSS of the child in KiB, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        return wall, usage.ru_maxrss, out.read().decode()


# --- the runs -------------------------------------------------------------------------------

def _identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]


def bench(services: int, runs: int, formats: list[str], work: Path) -> dict[str, Any]:
    """Every measurement. The processes are measured first, while this one is still small: a
    child's ru_maxrss can include the RSS of the parent it was forked from."""
    load_before = load_average()
    text = generate_spec(services)
    spec_path = work / "shipmate.yaml"
    spec_path.write_text(text, encoding="utf-8")
    python = sys.executable
    shipmate = shutil.which("shipmate", path=str(Path(python).parent))
    kubectl = shutil.which("kubectl", path=str(Path(python).parent)) or shutil.which("kubectl")
    if shipmate is None or kubectl is None:
        raise SystemExit("run `make bench`: it installs the shipmate and kubectl commands into .venv")

    def cold_runs(names: list[str]) -> list[dict[str, Any]]:
        out = []
        for _ in range(runs):
            wall, _, printed = measured([python, __file__, "--formats", ",".join(names), "--child", str(spec_path)])
            out.append({**json.loads(printed), "wall": wall})
        return out

    cold = cold_runs(formats)
    cold_manifests = cold_runs(["manifests"])
    cli_format = "all" if formats == all_formats() else formats[0] if len(formats) == 1 else None
    cli = [] if cli_format is None else [
        measured([shipmate, "--no-color", "-f", str(spec_path), "render", "--format", cli_format, "--out",
                  str(work / f"cli-{i}")])[:2] for i in range(runs)]

    kustomize_dir = work / "kustomize"
    measured([shipmate, "-f", str(spec_path), "render", "--format", "kustomize", "--out", str(kustomize_dir)])
    kustomize_runs: list[list[tuple[float, int]]] = []
    built: dict[str, str] = {}
    for _ in range(runs):
        if kustomize_runs and sum(w for w, _ in kustomize_runs[0]) > SLOW_KUSTOMIZE_SECONDS:
            break  # minutes per round: the median of more rounds would not change the verdict
        per_env = []
        for env in ENVIRONMENTS:
            wall, rss, built[env] = measured([kubectl, "kustomize", f"overlays/{env}"], cwd=kustomize_dir)
            per_env.append((wall, rss))
        kustomize_runs.append(per_env)
    kubectl_version = json.loads(subprocess.run([kubectl, "version", "--client", "-o", "json"], capture_output=True,
                                                text=True, check=True).stdout)

    render_once(text, formats)  # warm the imports and caches of the in-process runs
    warm = [render_once(text, formats) for _ in range(runs)]

    from shipmate.render.kit import build_kit
    from shipmate.spec.loader import load_text

    kit = build_kit(load_text(text, "shipmate.yaml", {}))
    same = all(sorted((d for d in yaml.safe_load_all(built[env]) if d), key=_identity)
               == sorted(kit.objects[env], key=_identity) for env in ENVIRONMENTS)
    return {
        "services": services, "runs": runs, "formats": formats, "cli_format": cli_format,
        "load_average": (load_before, load_average()),
        "spec_bytes": len(text.encode()), "warm": warm, "cold": cold, "cold_manifests": cold_manifests,
        "cli": cli, "kustomize": kustomize_runs, "kustomize_same_objects": same,
        "kustomize_version": kubectl_version.get("kustomizeVersion", "?"),
        "kubectl_version": kubectl_version.get("clientVersion", {}).get("gitVersion", "?"),
    }


# --- the report -----------------------------------------------------------------------------

def _median(values: list[float]) -> float:
    return statistics.median(values)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def machine() -> dict[str, str]:
    cpu = "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    from shipmate import __version__

    return {"nproc": str(usable), "cpu": cpu, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "shipmate": __version__}


def load_average() -> str:
    """The 1-minute load average: other work on the machine shows in the figures."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "?"


def report(data: dict[str, Any]) -> str:
    warm, cold, cli, kz = data["warm"], data["cold"], data["cli"], data["kustomize"]
    sample = warm[0]
    warm_total = _median([r["total"] for r in warm])
    cold_wall = _median([r["wall"] for r in cold])
    same_wall = _median([r["wall"] for r in data["cold_manifests"]])
    kz_total = _median([sum(w for w, _ in run) for run in kz])
    kz_env = {env: _median([run[i][0] for run in kz]) for i, env in enumerate(ENVIRONMENTS)}
    formats = ", ".join(data["formats"])
    info = machine()
    rows = [
        ("shipmate in-process: load", _ms(_median([r["load"] for r in warm])), ""),
        (f"shipmate in-process: plan + objects ({sample['service_environments']} service-environments)",
         _ms(_median([r["plan_render"] for r in warm])), ""),
        ("shipmate in-process: the formats", _ms(_median([r["formats"] for r in warm])), ""),
        ("**shipmate in-process: total**", f"**{_ms(warm_total)}**", ""),
        ("shipmate, fresh process (start, imports, load, plan, the formats)", _ms(cold_wall),
         _mib(max(r["maxrss_kib"] for r in cold))),
        *((f"`shipmate render --format {data['cli_format']}` (console script, files written)",
           _ms(_median([w for w, _ in cli])), _mib(max(r for _, r in cli))) for _ in cli[:1]),
        ("shipmate, fresh process, manifests only (the objects kustomize outputs)", _ms(same_wall),
         _mib(max(r["maxrss_kib"] for r in data["cold_manifests"]))),
        *((f"`kubectl kustomize overlays/{env}`", _ms(kz_env[env]), "") for env in ENVIRONMENTS),
        ("**`kubectl kustomize`, the 3 overlays in turn**", f"**{_ms(kz_total)}**",
         _mib(max(r for run in kz for _, r in run))),
    ]
    goal_fast = warm_total < GOAL_SECONDS
    vs_kustomize = same_wall < kz_total
    lines = [
        f"## {SECTION}",
        "",
        f"Reproduce with `make bench` (`.venv/bin/python benchmarks/render.py`); measured "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}. Median of {data['runs']} runs"
        + (f" ({len(kz)} of kustomize, as one round of it takes over {SLOW_KUSTOMIZE_SECONDS:.0f} s)"
           if len(kz) < data["runs"] else "")
        + "; memory is the peak resident set of the process (VmHWM of shipmate, ru_maxrss of kubectl).",
        "",
        f"Machine: nproc {info['nproc']} ({info['cpu']}), {info['os']}, Python {info['python']}, "
        f"shipmate {info['shipmate']}, kubectl {data['kubectl_version']} with kustomize "
        f"{data['kustomize_version']}; 1-minute load average {data['load_average'][0]} before the run, "
        f"{data['load_average'][1]} after.",
        "",
        f"Input: a generated spec (`benchmarks/render.py --print-spec`) of {data['services']} services x "
        f"{len(ENVIRONMENTS)} environments ({data['spec_bytes'] / 1024:,.0f} KiB): ports, config, secrets "
        "from addons and generated, 4 addons, calls between services, every 10th exposed, every 4th "
        f"autoscaled, prod overrides. Output: {sample['service_environments']} service-environments, "
        f"{sample['objects']:,} objects, {sample['files']:,} files ({sample['bytes'] / 1024 / 1024:,.1f} MiB) "
        f"in {len(data['formats'])} formats ({formats}).",
        "",
        "| what | time | peak memory |",
        "| --- | ---: | ---: |",
        *(f"| {what} | {t} | {m} |" for what, t, m in rows),
        "",
        "`kubectl kustomize overlays/<env>` yields the same objects as shipmate renders for that "
        f"environment: {'yes' if data['kustomize_same_objects'] else 'NO'}.",
        "",
        "Goals:",
        f"- all {sample['service_environments']} service-environments (load, plan, {formats}) in under "
        f"{GOAL_SECONDS:.0f} s on this machine: **{'met' if goal_fast else 'missed'}** ({_ms(warm_total)} "
        f"in-process; {_ms(cold_wall)} from a cold start).",
        f"- faster than kustomize on the same output: **{'met' if vs_kustomize else 'missed'}** (from "
        f"shipmate.yaml to the objects of the 3 environments in {_ms(same_wall)} from a cold start; "
        f"`kubectl kustomize` takes {_ms(kz_total)} to build the same objects from shipmate's overlays, "
        f"{kz_total / same_wall:,.1f}x).",
        "",
    ]
    return "\n".join(lines)


def all_formats() -> list[str]:
    from shipmate.render.formats import FORMATS

    return list(FORMATS)




def profile(services: int, formats: list[str]) -> None:
    text = generate_spec(services)
    render_once(text, formats)
    profiler = cProfile.Profile()
    profiler.enable()
    figures = render_once(text, formats)
    profiler.disable()
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))
    for order in ("cumulative", "tottime"):
        pstats.Stats(profiler).strip_dirs().sort_stats(order).print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file to update")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one in-process run")
    parser.add_argument("--print-spec", action="store_true", help="print the generated spec and stop")
    parser.add_argument("--formats", default="all", help="comma-separated formats to render (default all)")
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    formats = all_formats() if args.formats == "all" else args.formats.split(",")
    if args.child:
        child(args.child, formats)
        return
    if args.print_spec:
        sys.stdout.write(generate_spec(args.services))
        return
    if args.profile:
        profile(args.services, formats)
        return
    with tempfile.TemporaryDirectory(prefix="shipmate-bench-") as tmp:
        data = bench(args.services, args.runs, formats, Path(tmp))
    body = report(data)
    current = args.results.read_text(encoding="utf-8") if args.results.is_file() else ""
    args.results.write_text(replace_section(current, SECTION, body), encoding="utf-8")
    sys.stdout.write(body)


if __name__ == "__main__":
    main()
