"""benchmarks.packing on a folder of its own making: any folder in the VPSolver format works,
--sample spreads over the classes, and the .sol files let an outside checker verify hosts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.packing import main


def write(dataset: Path) -> None:
    rng = np.random.default_rng(3)
    rows = ["instance_name\tLB\tOPT\tbest_overall"]
    for cls in ("alpha", "beta"):
        (dataset / cls).mkdir(parents=True)
        for k in range(3):
            items = rng.integers(1, 60, (12, 2))
            text = "2\n100 100\n12\n" + "".join(f"{a} {b} 1\n" for a, b in items)
            (dataset / cls / f"{cls}_{k}.vbp").write_text(text)
            rows.append(f"{cls}_{k}\t1\t-1\t99")
    (dataset / "known.tsv").write_text("\n".join(rows) + "\n")


def outside_check(vbp: Path, sol: Path) -> int:
    """What an outside checker does with a .sol: feasibility and the host count."""
    tok = [int(t) for t in vbp.read_text().split()]
    d, cap, m = tok[0], tok[1:1 + tok[0]], tok[1 + tok[0]]
    items = [tok[2 + d + r * (d + 1): 2 + d + r * (d + 1) + d] for r in range(m)]
    hosts = [int(x) for x in sol.read_text().split()]
    assert len(hosts) == len(items)
    load: dict[int, list[int]] = {}
    for h, w in zip(hosts, items):
        load[h] = [a + b for a, b in zip(load.get(h, [0] * d), w)]
    assert all(all(a <= c for a, c in zip(v, cap)) for v in load.values())
    return len(load)


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_any_folder_in_the_format(tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    data, sols, out = tmp_path / "data", tmp_path / "sols", tmp_path / "r.json"
    write(data)
    assert main(["--dataset", str(data), "--mode", mode, "--time-limit", "0.5", "--sample", "4",
                 "--solutions", str(sols), "--json", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["instances"] == 4 and set(printed["per_class"]) == {"alpha", "beta"}  # spread over both
    assert printed["mean_bins_over_opt"] is None  # no OPT known here
    assert printed["mean_bins_over_lb"] >= 1.0 and printed["worse_than_best_published_count"] == 0
    for sol in sols.glob("*.sol"):
        vbp = next(data.rglob(f"{sol.stem}.vbp"))
        assert outside_check(vbp, sol) >= 1
    assert len(list(sols.glob("*.sol"))) == 4


def test_a_folder_without_instances_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["--dataset", str(tmp_path)])
