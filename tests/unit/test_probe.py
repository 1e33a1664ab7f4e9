"""Reading a guest's console for the faults a corrupted live migration leaves (lines as seen here)."""
from __future__ import annotations

import pytest

from vdcos.vswitch.probe import guest_faults


@pytest.mark.parametrize("console, want", [
    ("GUEST-BOOTED 1.2\nNET-UP 02:00:03:e8:00:02 10.9.0.2/24\nCNT 1 2.01\n", []),
    ("CNT 177 27.72\n[   31.150098] BUG: Bad page state in process ksoftirqd/0  pfn:063af\nCNT 204 31.36\n",
     ["[   31.150098] BUG: Bad page state in process ksoftirqd/0  pfn:063af"]),
    ("CNT 9 15.75\r\n[   43.140940] virtio_net virtio0: output.0:id 2 is not a head!\r\n",
     ["[   43.140940] virtio_net virtio0: output.0:id 2 is not a head!"]),
], ids=["clean", "bad-page", "virtio-ring"])
def test_guest_faults(console: str, want: list[str]) -> None:
    assert guest_faults(console) == want
