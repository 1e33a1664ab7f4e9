"""The power transitions, table-driven: what each action asks from each desired state, and which
it refuses (lifecycle/power.py's decide; no I/O)."""
from __future__ import annotations

import pytest

from vdcos.errors import FailedPrecondition
from vdcos.lifecycle.power import Action, decide
from vdcos.model import Power, PowerState

ON, OFF, PAUSED, SHELVED = PowerState.ON, PowerState.OFF, PowerState.PAUSED, PowerState.SHELVED


@pytest.mark.parametrize("state, action, want", [
    (OFF, Action.START, ON), (ON, Action.START, ON), (SHELVED, Action.START, ON),
    (ON, Action.STOP, OFF), (PAUSED, Action.STOP, OFF), (OFF, Action.STOP, OFF), (SHELVED, Action.STOP, SHELVED),
    (ON, Action.SUSPEND, PAUSED), (PAUSED, Action.SUSPEND, PAUSED),
    (PAUSED, Action.RESUME, ON), (ON, Action.RESUME, ON),
    (OFF, Action.SHELVE, SHELVED), (SHELVED, Action.SHELVE, SHELVED),
    (ON, Action.REBOOT, ON),
])
def test_allowed(state: PowerState, action: Action, want: PowerState) -> None:
    assert decide("vm", Power(state), action).state is want


@pytest.mark.parametrize("state, action, words", [
    (PAUSED, Action.START, "resume it"),
    (OFF, Action.REBOOT, "start it"), (PAUSED, Action.REBOOT, "resume it first"), (SHELVED, Action.REBOOT, "shelved"),
    (OFF, Action.SUSPEND, "only a running VM"), (SHELVED, Action.SUSPEND, "only a running VM"),
    (OFF, Action.RESUME, "not suspended"), (SHELVED, Action.RESUME, "not suspended"),
    (ON, Action.SHELVE, "stop it first"), (PAUSED, Action.SHELVE, "stop it first"),
])
def test_refused(state: PowerState, action: Action, words: str) -> None:
    with pytest.raises(FailedPrecondition, match=words):
        decide("vm", Power(state), action)


def test_asking_twice_changes_nothing_and_counts_reboots() -> None:
    on = Power()
    assert decide("vm", on, Action.START) == on and decide("vm", on, Action.RESUME) == on
    twice = decide("vm", decide("vm", on, Action.REBOOT), Action.REBOOT, hard=True)
    assert (twice.reboots, twice.hard) == (2, True)


def test_a_forced_stop_overtakes_a_graceful_one() -> None:
    graceful = decide("vm", Power(), Action.STOP, timeout_s=120)
    assert (graceful.state, graceful.hard, graceful.stop_timeout_s) == (OFF, False, 120)
    assert decide("vm", graceful, Action.STOP) == graceful
    assert decide("vm", graceful, Action.STOP, hard=True).hard
    assert decide("vm", graceful, Action.START) == Power(ON, hard=False, stop_timeout_s=120)
