"""benchmarks.placement end to end, small: its own etcd and scheduler process, every API, the
latency-bound runs, the paced (open-loop) run, the scale-out to two replicas, and one JSON object
with the fields the foundation issue names."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vdcos.host.wakeup import DEVICE

ROOT = Path(__file__).resolve().parents[2]


def test_the_placement_benchmark_places_everything_and_reports_it(tmp_path: Path) -> None:
    out = tmp_path / "placement.json"
    p = subprocess.run([sys.executable, "-m", "benchmarks.placement", "--hosts", "200", "--vms", "400",
                        "--compare-vms", "100", "--noop-calls", "100", "--baseline-vms", "20", "--slo-vms", "40",
                        "--paced-vms", "160", "--paced-rate", "400", "--project-vms", "200", "--metrics-vms", "200", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert json.loads(p.stdout.strip().splitlines()[-1]) == r
    assert (r["hosts"], r["vms"], r["placed"], r["refused"], r["over_capacity_nodes"]) == (200, 400, 400, {}, 0)
    for field in ("placements_per_s", "p50_ms", "p99_ms", "decision_us_p50", "stream_per_s", "unary_per_s",
                  "noop_unary_per_s", "baseline_serial_per_s", "one_replica_per_s", "replicas_per_s",
                  "saturated_per_s", "paced_per_s", "paced_p99_ms"):
        assert r[field] > 0, field
    assert [x["batch"] for x in r["latency_bound_runs"]] == [4, 8, 16, 32]
    within = [x["per_s"] for x in r["latency_bound_runs"] if x["p99_ms"] <= 20]
    assert r["per_s_at_p99_le_20ms"] == max(within, default=0.0)
    assert r["scale_replicas"] == 2 and r["replicas_vs_one"] > 0
    assert isinstance(r["targets_met"], bool)
    assert (r["in_flight"], r["saturated_in_flight"]) == (32, 64)
    assert (r["paced_offered_per_s"], r["paced_refused"]) == (400, {})
    assert r["cpu_wakeup_latency_us"] == (0 if os.access(DEVICE, os.W_OK) else None)
    # The main run, also in plaintext: the same VMs placed, nothing over capacity.
    assert (r["insecure_placed"], r["insecure_over_capacity_nodes"]) == (400, 0)
    assert r["secure_vs_insecure"] > 0 and r["transport"].startswith("TLS")
    # VMs of a project under a quota, against VMs of none: each charged once, none refused.
    assert (r["project_placed"], r["project_quota_used_vms"]) == (200, 200) and r["quota_vs_no_project"] > 0
    # A replica with its metrics on (and scraped every second) against one with them off.
    assert (r["metrics_on_placed"], r["metrics_off_placed"], r["metrics_scrape_failures"]) == (200, 200, 0)
    assert r["metrics_overhead"] > 0 and r["metrics_scrapes"] >= 1 and r["metrics_series"] > 0
