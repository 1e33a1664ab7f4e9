"""The capacity planner on published vector bin-packing instances.

    python -m benchmarks.packing --dataset DIR --mode offline|online [--time-limit S] [--sample N]
                                 [--solutions OUT] [--json FILE]

DIR holds .vbp files (VPSolver format, in subfolders or not) and a known.tsv (instance_name, LB,
OPT (-1 unknown), best_overall, ...). offline: the planner's engine (heuristics + MIP) with S
seconds per instance. online: items arrive in file order and are never moved; the scheduler's
own pack policy, against first fit (the plain online baseline) and first-fit decreasing (the
offline heuristic it would be if it could reorder), all run here on the same instances.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import emit
from vdcos.planner import Packing, Problem, ProblemError, check, first_fit, load_vbp, lower_bound, online, solve
from vdcos.planner.heuristics import BIN_SCORES, item_centric


def known(dataset: Path) -> dict[str, dict[str, int]]:
    path = dataset / "known.tsv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        out = {}
        for row in csv.DictReader(f, delimiter="\t"):
            try:
                out[row["instance_name"]] = {k: int(float(row[k])) for k in ("LB", "OPT", "best_overall") if row.get(k)}
            except ValueError:
                continue
        return out


def class_of(path: Path, dataset: Path) -> str:
    """The folder an instance is in, else its name up to the first '_' (class1_20_3_0 -> class1)."""
    return path.parent.name if path.parent != dataset else path.stem.split("_")[0]


def sample(files: list[Path], dataset: Path, n: int) -> list[Path]:
    """n instances spread over the classes (round robin), evenly over each class's sorted list."""
    by_class: dict[str, list[Path]] = defaultdict(list)
    for f in sorted(files):
        by_class[class_of(f, dataset)].append(f)
    classes = sorted(by_class)
    quota = {c: 0 for c in classes}
    for k in range(min(n, len(files))):
        open_ = [c for c in classes if quota[c] < len(by_class[c])]
        quota[open_[k % len(open_)]] += 1
    out = []
    for c in classes:
        q, fs = quota[c], by_class[c]
        if q:
            out += [fs[int(i)] for i in np.unique(np.linspace(0, len(fs) - 1, q).round().astype(int))]
    return sorted(out)


def ffd(problem: Problem) -> Packing:
    return item_centric(problem, np.argsort(-problem.relative().sum(axis=1), kind="stable"), BIN_SCORES["first"])


def write_solution(out: Path, name: str, packing: Packing) -> None:
    (out / f"{name}.sol").write_text("".join(f"{h}\n" for h in packing.host.tolist()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks.packing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--mode", choices=["offline", "online"], default="offline")
    ap.add_argument("--time-limit", type=float, default=5.0, help="seconds per instance (offline)")
    ap.add_argument("--sample", type=int, help="a deterministic subset of N instances spread over the classes")
    ap.add_argument("--solutions", type=Path, help="write DIR/<instance>.sol: the host of each item, one per line")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not args.dataset.is_dir():
        ap.error(f"--dataset: {args.dataset} is not a folder")
    args.dataset = args.dataset.resolve()
    files = sorted(args.dataset.rglob("*.vbp"))
    if not files:
        ap.error(f"--dataset: no .vbp file under {args.dataset}")
    if args.sample is not None:
        if args.sample < 1:
            ap.error("--sample: must be at least 1")
        files = sample(files, args.dataset, args.sample)
    if args.time_limit <= 0:
        ap.error("--time-limit: must be positive")
    if args.solutions:
        args.solutions.mkdir(parents=True, exist_ok=True)
    ref = known(args.dataset)

    t0 = time.monotonic()
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    for f in files:
        try:
            problem = load_vbp(f)
        except ProblemError as e:
            errors.append(str(e))
            continue
        r = ref.get(problem.name, {})
        row: dict[str, Any] = {"name": problem.name, "class": class_of(f, args.dataset), "n": problem.n,
                               "opt": r.get("OPT", -1), "best": r.get("best_overall", -1)}
        if args.mode == "offline":
            plan = solve(problem, args.time_limit)
            packing = plan.packing
            row.update(proven_lb=plan.lower_bound, method=plan.method, seconds=plan.seconds)
        else:
            s = time.monotonic()
            packing = online(problem)
            row.update(seconds=time.monotonic() - s, first_fit=first_fit(problem).hosts, ffd=ffd(problem).hosts,
                       proven_lb=lower_bound(problem))
        check(problem, packing)  # feasibility checked, never assumed
        row["hosts"] = packing.hosts
        row["lb"] = max(r.get("LB", 0), row["proven_lb"])
        rows.append(row)
        if args.solutions:
            write_solution(args.solutions, problem.name, packing)

    with_opt = [r for r in rows if r["opt"] > 0]
    ratio = {r["name"]: r["hosts"] / (r["opt"] if r["opt"] > 0 else r["lb"]) for r in rows}
    per_class: dict[str, list[float]] = defaultdict(list)
    per_class_best: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        per_class[r["class"]].append(ratio[r["name"]])
        if r["best"] > 0:
            per_class_best[r["class"]].append(r["best"] / (r["opt"] if r["opt"] > 0 else r["lb"]))
    result: dict[str, Any] = {
        "benchmark": "packing",
        "mode": args.mode,
        "dataset": str(args.dataset),
        "instances": len(rows),
        "time_limit_s": args.time_limit if args.mode == "offline" else None,
        "mean_bins_over_opt": round(float(np.mean([r["hosts"] / r["opt"] for r in with_opt])), 4) if with_opt else None,
        "mean_bins_over_lb": round(float(np.mean([r["hosts"] / r["lb"] for r in rows])), 4) if rows else None,
        "optimal_count": sum(r["hosts"] == r["opt"] or r["hosts"] == r["proven_lb"] for r in rows),
        "proven_optimal_count": sum(r["hosts"] == r["proven_lb"] for r in rows),
        "worse_than_best_published_count": sum(r["best"] > 0 and r["hosts"] > r["best"] for r in rows),
        "worse_than_best_published": sorted(f'{r["name"]}:{r["hosts"]}>{r["best"]}' for r in rows
                                            if r["best"] > 0 and r["hosts"] > r["best"]),
        "better_than_best_published_count": sum(r["best"] > 0 and r["hosts"] < r["best"] for r in rows),
        "hosts_total": sum(r["hosts"] for r in rows),
        "best_published_hosts_total": sum(r["best"] for r in rows if r["best"] > 0),
        "per_class": {c: round(float(np.mean(v)), 4) for c, v in sorted(per_class.items())},
        "per_class_best_published": {c: round(float(np.mean(v)), 4) for c, v in sorted(per_class_best.items())},
        "seconds_total": round(time.monotonic() - t0, 1),
        "errors": errors,
    }
    result["classes_worse_than_published"] = sorted(
        c for c, v in result["per_class"].items() if c in result["per_class_best_published"]
        and v > result["per_class_best_published"][c] + 1e-9)
    if args.mode == "offline":
        result["methods"] = dict(sorted(Counter(r["method"] for r in rows).items()))
    else:
        ff, fd = sum(r["first_fit"] for r in rows), sum(r["ffd"] for r in rows)
        result.update(first_fit_hosts_total=ff, ffd_hosts_total=fd,
                      online_vs_first_fit=round(result["hosts_total"] / ff, 4) if ff else None,
                      online_vs_ffd=round(result["hosts_total"] / fd, 4) if fd else None,
                      online_better_than_first_fit_count=sum(r["hosts"] < r["first_fit"] for r in rows),
                      online_worse_than_first_fit_count=sum(r["hosts"] > r["first_fit"] for r in rows),
                      decision_us_mean=round(1e6 * sum(r["seconds"] for r in rows) / max(sum(r["n"] for r in rows), 1), 1))
    emit(result, args.json)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
