"""Pool folder hygiene that needs no hypervisor: what a crashed copy leaves behind."""
from __future__ import annotations

import os
import time
from pathlib import Path

from vdcos.storagepool.pool import STALE_TEMPORARY_S, sweep_temporaries


def test_only_temporaries_older_than_any_copy_are_swept(tmp_path: Path) -> None:
    local, shared = tmp_path / "local", tmp_path / "shared"
    local.mkdir()
    shared.mkdir()
    now = time.time()
    crashed = local / ".data.qcow2.tmp"
    copying = shared / ".other.qcow2.tmp"  # another host may be writing it right now
    volume = local / "data.qcow2"
    for p in (crashed, copying, volume):
        p.write_bytes(b"x")
    os.utime(crashed, (now - STALE_TEMPORARY_S - 1,) * 2)
    os.utime(volume, (now - 10 * STALE_TEMPORARY_S,) * 2)
    assert sweep_temporaries([local, shared], now) == [str(crashed)]
    assert not crashed.exists() and copying.exists() and volume.exists()
