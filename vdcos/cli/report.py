"""`vdcos capacity report -o report.png`: the capacity report drawn as one picture."""
from __future__ import annotations

from pathlib import Path

from vdcos.model import DIMENSIONS
from vdcos.v1 import capacity_service_pb2 as cap_pb


def utilization(r: cap_pb.GetCapacityReportResponse) -> tuple[list[str], list[list[float]]]:
    """Node names and, per dimension, committed / allocatable on each node (0 where it has none)."""
    names = [n.node for n in r.nodes]
    rows = []
    for dim in DIMENSIONS:
        rows.append([getattr(n.committed, dim) / getattr(n.allocatable, dim) if getattr(n.allocatable, dim) else 0.0
                     for n in r.nodes])
    return names, rows


def draw(r: cap_pb.GetCapacityReportResponse, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt
    import numpy as np

    names, rows = utilization(r)
    fig = plt.figure(figsize=(13, 8), layout="constrained")
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
    ax = fig.add_subplot(grid[0, :])
    u = np.asarray(rows)
    if len(names) <= 48:
        width = 0.8 / len(DIMENSIONS)
        x = np.arange(len(names))
        for j, dim in enumerate(DIMENSIONS):
            ax.bar(x + j * width, u[j] * 100, width, label=dim)
        ax.set_xticks(x + 0.4 - width / 2, names, rotation=45 if len(names) > 12 else 0, ha="right")
        ax.set_ylabel("committed / allocatable (%)")
        ax.axhline(100, color="black", lw=0.8)
        ax.legend(ncols=len(DIMENSIONS), fontsize=8, loc="upper right")
    else:
        im = ax.imshow(u * 100, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0, vmax=100)
        ax.set_yticks(range(len(DIMENSIONS)), DIMENSIONS)
        ax.set_xlabel(f"{len(names)} hosts")
        fig.colorbar(im, ax=ax, label="committed / allocatable (%)")
    unschedulable = sum(1 for n in r.nodes if not n.schedulable)
    ax.set_title(f"Utilization per host and dimension (load std. dev. {r.imbalance:.3f}"
                 + (f", {unschedulable} hosts cordoned or NotReady" if unschedulable else "") + ")")

    ax2 = fig.add_subplot(grid[1, 0])
    s = r.summary
    free = [max(getattr(s.free_committed, d), 0) for d in DIMENSIONS]
    stranded = [r.stranded.get(d, 0.0) for d in DIMENSIONS]
    share = [100 * st / f if f else 0.0 for st, f in zip(stranded, free)]
    ax2.bar(DIMENSIONS, share, color="tab:red")
    for i, (st, pct) in enumerate(zip(stranded, share)):
        ax2.text(i, pct, f"{st:.0f}", ha="center", va="bottom", fontsize=8)
    ax2.set_ylim(0, max(10.0, max(share) * 1.15))
    ax2.set_ylabel("% of free capacity")
    ax2.set_title("Stranded: free where another dimension is full")
    ax2.tick_params(axis="x", labelsize=8)

    ax3 = fig.add_subplot(grid[1, 1])
    labels = [h.name for h in r.headroom]
    x = np.arange(len(labels))
    ax3.bar(x - 0.2, [h.guaranteed for h in r.headroom], 0.4, label="guaranteed")
    ax3.bar(x + 0.2, [h.burstable for h in r.headroom], 0.4, label="burstable")
    ax3.set_xticks(x, [f"{h.name}\n{h.resources.vcpus} vCPU, {h.resources.memory_mib // 1024} GiB"
                       for h in r.headroom], fontsize=8)
    ax3.set_ylabel("more VMs that fit now")
    ax3.set_title("Headroom by VM shape")
    ax3.legend(fontsize=8)
    fig.suptitle(f"vdcos capacity: {s.nodes_ready}/{s.nodes_total} hosts ready, {s.vms_total} VMs")
    fig.savefig(path, dpi=100)
    plt.close(fig)
