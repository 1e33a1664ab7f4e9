"""The web dashboard in a real browser (Debian's headless Chromium, driven by Selenium) against a
datacenter of two real libvirt hosts with its Prometheus, as `vdcos up --prometheus` makes it: sign
in with a token, read every page at 1280x800 and at a phone's width, create a VM, watch it run and
chart, live-migrate it from the page and see the progress bar move to the end, stop and start
it from its page, delete it; a
reader is offered no action, a tenant sees its own project only. Each view is saved as a
screenshot under artifacts/dashboard/."""
from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from tests.conftest import wait_until
from tests.e2e.browser import DESKTOP, PHONE, ARTIFACTS, Browser
from tests.e2e.dc import Datacenter, vdcos
from vdcos.images import counters, ensure
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import token_service_pb2 as tok_pb
from vdcos.v1 import types_pb2 as pb
from vdcos.v1 import vm_service_pb2 as vm_pb

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]
PAGES = ("overview", "hosts", "vms", "migrations", "ha", "refusals", "events")
SHOTS = ARTIFACTS / "dashboard"


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Datacenter]:
    ensure()
    home = tmp_path_factory.mktemp("dash") / "dc"
    out = vdcos(home, "up", "--hosts", "2", "--driver", "libvirt", "--prometheus")
    d = Datacenter(home)
    assert d.state.dashboard.startswith("https://127.0.0.1:") and f"dashboard: {d.state.dashboard}" in out
    yield d
    d.close()
    vdcos(home, "down", "--purge")
    assert not any(p.running() for p in d.state.procs), "vdcos down left processes behind"


@pytest.fixture(scope="module")
def browser(dc: Datacenter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(dc.state.dashboard, tmp_path_factory.mktemp("chromium") / "profile", SHOTS)
    try:
        yield b
    finally:
        b.close()


def token(dc: Datacenter, name: str, role: str, project: str = "") -> str:
    return str(dc.client.tokens.CreateToken(tok_pb.CreateTokenRequest(name=name, role=role, project=project)).secret)


def sign_in(b: Browser, secret: str) -> None:
    """Through the sign-in form, as whoever signed in before is forgotten (a fresh tab)."""
    b.open()
    b.driver.execute_script("sessionStorage.clear()")
    b.driver.refresh()
    b.wait(lambda: b.find("#login #token"), what="the sign-in form")
    field = b.one("#token")
    field.clear()
    field.send_keys(secret)
    b.one("#login button[type=submit]").click()


def test_signs_in_with_a_token_and_refuses_a_wrong_one(dc: Datacenter, browser: Browser) -> None:
    b = browser
    sign_in(b, "vdcos.tok-0123456789ab.not-the-secret-at-all-not-the-secret-at-all")
    b.wait(lambda: "not valid" in b.text("#login .error"), what="the refusal of a wrong token")
    b.shot("sign-in-refused")
    # `vdcos dashboard`'s link signs in by itself, and the token leaves the address bar.
    link = vdcos(dc.home, "dashboard", "--role", "reader").splitlines()[0]
    assert link.startswith(dc.state.dashboard) and "#token=vdcos.tok-" in link
    b.driver.get(link)
    b.wait(lambda: "reader" in b.text("#caller"), what="the link's reader signed in")
    assert "token" not in b.driver.current_url
    sign_in(b, token(dc, "browser-admin", "admin"))
    b.wait(lambda: "admin" in b.text("#caller"), what="the signed-in caller")
    assert b.errors() == [], b.errors()


def test_every_page_reads_at_desktop_and_phone_width(dc: Datacenter, browser: Browser) -> None:
    b = browser
    for size in (DESKTOP, PHONE):
        b.view(*size)
        for page in PAGES:
            b.go(page)
            b.wait(lambda: b.count(f"#page-{page} .live section"), what=f"the {page} page")
            b.shot(page)
            assert not b.overflows(), f"{page} scrolls sideways at {size}"
            assert not b.count(f"#page-{page} .error"), b.text(f"#page-{page} .error")
    b.view(*DESKTOP)
    b.go("overview")
    b.wait(lambda: b.count("#heatmap tbody tr") == 2, what="a heatmap row per host")
    assert "2/2" in b.text(".cards")
    assert b.errors() == [], b.errors()


def test_create_watch_migrate_and_delete_from_the_page(dc: Datacenter, browser: Browser) -> None:
    b = browser
    b.go("vms")
    form = b.wait(lambda: b.find("#create-vm"), what="the create form")[0]
    for field, value in (("name", "web-1"), ("vcpus", "1"), ("memory_mib", "256"), ("disk_gib", "1")):
        box = form.find_element("css selector", f"input[name={field}]")
        box.clear()
        box.send_keys(value)
    form.find_element("css selector", "button[type=submit]").click()
    b.click('tr[data-vm="web-1"] a')
    b.wait(lambda: b.text("#vm-phase") == "running", timeout=90, what="the VM running")
    src = b.text("#vm-node")
    wait_until(lambda: len(counters(dc.console(src, "web-1"))) >= 3, timeout=90, every=0.2)
    # Its usage charts fill from the agent's samples (and Prometheus's history when it has some).
    b.wait(lambda: b.count(".chart polyline") == 2, timeout=30, what="the CPU and memory charts")
    b.shot("vm-running")

    # A move slow enough to watch (32 MiB/s: about 4 s); the page follows it to the migrations list.
    b.one("#migrate-bandwidth").send_keys("32")
    b.click("#migrate")
    row = 'tr[data-vm="web-1"]'
    b.wait(lambda: b.count(f"#active-migrations {row}"), what="the migration in progress")
    seen: list[int] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if b.attr(row, "data-phase") == "completed":
            break
        value = b.attr(f"{row} [role=progressbar]", "aria-valuenow")
        if value is not None and (not seen or int(value) != seen[-1]):
            seen.append(int(value))
            if len(seen) == 2:
                b.shot("migration-in-progress")
        time.sleep(0.2)
    b.wait(lambda: b.count(f'#finished-migrations {row}[data-phase="completed"]'), what="the migration finished")
    b.shot("migration-finished")
    moving = [v for v in seen if v < 100]
    assert len(moving) >= 2 and moving == sorted(moving), f"the bar did not move: {seen}"

    vm = dc.client.vms.GetVm(vm_pb.GetVmRequest(name="web-1")).vm
    dst = vm.placement.node
    assert dst != src
    # It runs there and nowhere else. (That the guest's counter goes on across a move is
    # test_libvirt's to check, at full speed: capped at 8 or 16 MiB/s, a move of many passes
    # left the TCG guest dead or panicking on arrival in about half of the tries here; its
    # consoles are kept with the screenshots.)
    try:
        wait_until(lambda: counters(dc.console(dst, "web-1")), timeout=30)
    finally:
        for node in (src, dst):
            (SHOTS / f"web-1-console-{node}.txt").write_text(dc.console(node, "web-1"))
    assert sorted(dc.host(dst).domains()) == ["web-1"] and not dc.host(src).domains()
    b.go("events")
    b.wait(lambda: "vm.migrated" in b.text("td"), what="the vm.migrated event")

    b.go("vms/web-1")
    b.click("#power-stop")
    b.wait(lambda: b.text("#vm-phase") == "stopped", timeout=120, what="the VM stopped from its page")
    assert "web-1" not in dc.host(dst).qemus()
    b.shot("vm-stopped")
    b.click("#power-start")
    b.wait(lambda: b.text("#vm-phase") == "running", timeout=60, what="the VM started again from its page")
    b.click("#delete")
    b.driver.switch_to.alert.accept()
    b.wait(lambda: b.count("#page-vms .live section") and not b.count('tr[data-vm="web-1"]'), what="the VM gone")
    wait_until(lambda: not dc.host(dst).domains(), timeout=30)
    assert b.errors() == [], b.errors()


def test_cordon_drain_and_refusals_from_the_page(dc: Datacenter, browser: Browser) -> None:
    b = browser
    b.go("hosts/host-2")
    b.click(".actions button", "Cordon")
    b.wait(lambda: "Uncordon" in b.text(".actions button"), what="host-2 cordoned")
    assert dc.client.nodes.GetNode(node_pb.GetNodeRequest(name="host-2")).node.cordoned
    b.shot("host-cordoned")
    b.click(".actions button", "Uncordon")
    b.wait(lambda: "Uncordon" not in b.text(".actions button"), what="host-2 uncordoned")
    # A drain of an empty host: done at once, and told as an event.
    b.click(".actions button", "Drain")
    b.driver.switch_to.alert.accept()
    b.wait(lambda: "drain host-2: done" in b.text("#flash"), what="the drain done")
    b.go("events")
    b.wait(lambda: "node.drained" in b.text("td"), what="the node.drained event")
    dc.client.nodes.UncordonNode(node_pb.UncordonNodeRequest(name="host-2"))  # a drain cordons

    # A VM too big for any host: the form says why, and the refusals page keeps it.
    b.go("vms")
    form = b.wait(lambda: b.find("#create-vm"), what="the create form")[0]
    for field, value in (("name", "too-big"), ("vcpus", "512")):
        box = form.find_element("css selector", f"input[name={field}]")
        box.clear()
        box.send_keys(value)
    form.find_element("css selector", "button[type=submit]").click()
    b.wait(lambda: "largest free" in b.text("#page-vms .error"), what="the refusal's explanation")
    b.shot("create-refused")
    b.go("refusals")
    b.wait(lambda: "too-big" in b.text('tr[data-kind="vm.refused"]'), what="the refusal listed")
    b.shot("refusals")


def test_a_reader_is_offered_no_action_and_a_tenant_sees_its_own(dc: Datacenter, browser: Browser) -> None:
    b = browser
    dc.tenant("red").vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
        name="red-1", resources=pb.Resources(vcpus=1, memory_mib=128))))
    dc.client.vms.CreateVm(vm_pb.CreateVmRequest(spec=pb.VmSpec(
        name="ops-1", resources=pb.Resources(vcpus=1, memory_mib=128))))
    sign_in(b, token(dc, "browser-reader", "reader"))
    b.wait(lambda: "reader" in b.text("#caller"), what="the reader signed in")
    b.go("vms")
    b.wait(lambda: b.count('tr[data-vm="ops-1"]') and b.count('tr[data-vm="red-1"]'), what="every VM")
    assert not b.count("#create-vm")
    b.go("vms/ops-1")
    b.wait(lambda: b.text("#vm-phase"), what="the VM page")
    assert not b.count("#migrate") and not b.count("#delete") and not b.count("#power-stop")
    b.go("hosts/host-1")
    b.wait(lambda: b.count("#page-host .live section"), what="the host page")
    assert not b.count(".actions button")
    b.shot("reader-host")

    sign_in(b, token(dc, "browser-red", "member", "red"))
    b.wait(lambda: "in red" in b.text("#caller"), what="the tenant signed in")
    b.go("vms")
    b.wait(lambda: b.count('tr[data-vm="red-1"]'), what="its VM")
    assert not b.count('tr[data-vm="ops-1"]')
    assert b.count("#create-vm")  # a member creates in its project
    b.go("overview")
    b.wait(lambda: "cluster role" in b.text("#page-overview"), what="the project's overview")
    b.go("vms/ops-1")
    b.wait(lambda: "NOT_FOUND" in b.text(".error") or "not found" in b.text(".error"), what="another's VM hidden")
    b.shot("tenant-other-vm")


def test_vm_history_comes_from_prometheus_for_those_who_may_see_the_vm(dc: Datacenter) -> None:
    ctx = ssl.create_default_context(cafile=dc.state.ca)

    def history(vm: str, secret: str) -> tuple[int, dict[str, object]]:
        req = urllib.request.Request(f"{dc.state.dashboard}api/history?vm={vm}&minutes=10",
                                     headers={"Authorization": f"Bearer {secret}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=20) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    admin, red = token(dc, "hist-admin", "admin"), token(dc, "hist-red", "member", "red")
    # The agent's samples reach Prometheus every 15 s; a rate needs two.
    got = wait_until(lambda: (h := history("ops-1", admin))[0] == 200 and h[1]["series"]["memory_mib"] and h,
                     timeout=90, every=3)
    assert got[1]["series"]["memory_mib"][-1][1] > 0  # type: ignore[index]
    status, body = history("ops-1", red)
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, body = history("red-1", red)
    assert status == 200 and body["vm"] == "red-1"
