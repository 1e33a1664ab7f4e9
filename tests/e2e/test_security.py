"""A datacenter from `vdcos up` is secure by default: its own CA, etcd and the API in TLS,
plaintext refused; the CLI works as the operator (admin, by certificate) and as a token's
holder (admin or reader, or a role in a project, within its quota); an outside client, buf curl
with only the CA and a token, is authorized like anyone else; a revoked token stops working."""
from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Iterator

import grpc
import pytest

from tests.conftest import wait_until
from tests.e2e.test_local_datacenter import jq, vdcos
from vdcos.cli.localdc import LocalDatacenter
from vdcos.v1 import vm_service_pb2 as vm_pb
from vdcos.v1 import vm_service_pb2_grpc

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / ".tools" / "node_modules" / ".bin" / "buf"


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("secure") / "dc"
    try:
        vdcos(home, "up", "--hosts", "2")
        vdcos(home, "vm", "create", "web-1")
        yield home
    finally:
        vdcos(home, "down", "--purge", check=False)


def state(home: Path) -> LocalDatacenter:
    s = LocalDatacenter.load(home)
    assert s is not None
    return s


def token(home: Path, name: str, role: str) -> str:
    made = jq(home, "token", "create", name, "--role", role)
    assert isinstance(made, dict) and made["role"] == role
    return str(made["token"])


def test_cluster_json_names_the_ca_and_keys_stay_private(dc: Path) -> None:
    raw = json.loads((dc / "cluster.json").read_text())
    assert Path(raw["ca"]).is_file() and raw["api"] and raw["api_mtls"]
    for key in (dc / "pki").glob("*-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_plaintext_is_refused_by_the_api_and_by_etcd(dc: Path) -> None:
    s = state(dc)
    for addr in (*s.api, *s.api_mtls):
        with grpc.insecure_channel(addr) as ch:
            with pytest.raises(grpc.RpcError) as e:
                vm_service_pb2_grpc.VmServiceStub(ch).ListVms(vm_pb.ListVmsRequest(), timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    for args in ([f"--endpoints={s.etcd_endpoint}"],  # plaintext
                 [f"--endpoints=https://{s.etcd_endpoint}", f"--cacert={s.ca}"]):  # TLS, no certificate
        p = subprocess.run(["etcdctl", *args, "--command-timeout=3s", "get", "/vdcos/", "--prefix", "--keys-only"],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "/vdcos/" not in p.stdout


def test_etcd_lets_each_component_write_only_its_part(dc: Path) -> None:
    """etcd's role-based access, by the CN of the client's certificate (state/access.py): a node
    agent's certificate writes its own node's records and VM statuses and nothing of another
    node's, no VM's spec, placement, assignment or allocation, nor tokens, the scheduler's
    configuration or quotas, and cannot read the tokens; a replica's can."""
    s = state(dc)
    pki = dc / "pki"

    def etcdctl(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["etcdctl", f"--endpoints={s.etcd_endpoint}", f"--cacert={s.ca}",
                               f"--cert={pki / f'{who}.pem'}", f"--key={pki / f'{who}-key.pem'}",
                               "--command-timeout=5s", *args], capture_output=True, text=True, timeout=30)
    node = "node-host-1"
    assert etcdctl(node, "get", "/vdcos/nodes/host-1/spec", "--print-value-only").stdout.strip()
    assert etcdctl(node, "put", "/vdcos/nodes/host-1/probe", "x").returncode == 0
    assert etcdctl(node, "del", "/vdcos/nodes/host-1/probe").returncode == 0
    assert etcdctl(node, "put", "/vdcos/vm-status/host-1/probe", "{}").returncode == 0
    assert etcdctl(node, "del", "/vdcos/vm-status/host-1/probe").returncode == 0
    assert etcdctl(node, "get", "/vdcos/vms/web-1/placement", "--print-value-only").stdout.strip()
    for args in (("put", "/vdcos/nodes/host-2/status", "{}"), ("put", "/vdcos/nodes/host-2/spec", "{}"),
                 ("put", "/vdcos/vm-status/host-2/web-1", "{}"), ("put", "/vdcos/vms/web-1/placement", "{}"),
                 ("put", "/vdcos/vms/web-1/spec", "{}"), ("put", "/vdcos/alloc/host-1", "{}"),
                 ("put", "/vdcos/assign/host-1/web-1", "{}"), ("put", "/vdcos/groups/g", "{}"),
                 ("get", "/vdcos/alloc/host-2"), ("get", "/vdcos/assign/host-2/", "--prefix"),
                 ("put", "/vdcos/pools/host-2/local", "{}"), ("put", "/vdcos/tokens/tok-000000000000", "{}"),
                 ("put", "/vdcos/config/scheduler", "{}"), ("put", "/vdcos/quotas/x", "{}"),
                 ("get", "/vdcos/tokens/", "--prefix", "--keys-only"), ("del", "/vdcos/", "--prefix")):
        p = etcdctl(node, *args)
        assert p.returncode != 0 and "permission denied" in p.stderr, (args, p.stdout, p.stderr)
    assert etcdctl("scheduler-scheduler", "get", "/vdcos/tokens/", "--prefix", "--keys-only").returncode == 0
    # What the node was refused changed nothing: the datacenter goes on.
    assert {v["spec"]["name"] for v in jq(dc, "vm", "list")["vms"]} >= {"web-1"}  # type: ignore[index]


def test_the_cli_as_admin_and_as_token_holders(dc: Path) -> None:
    admin, reader = token(dc, "ops", "admin"), token(dc, "auditor", "reader")
    assert jq(dc, "--token", admin, "vm", "create", "web-2")["spec"]["name"] == "web-2"  # type: ignore[index]
    names = {v["spec"]["name"] for v in jq(dc, "--token", reader, "vm", "list")["vms"]}  # type: ignore[index]
    assert {"web-1", "web-2"} <= names
    p = vdcos(dc, "--token", reader, "vm", "delete", "web-2", check=False)
    assert p.returncode == 1 and "PERMISSION_DENIED" in p.stderr and "reader" in p.stderr
    p = vdcos(dc, "--token", reader, "token", "create", "x", "--role", "admin", check=False)
    assert p.returncode == 1 and "PERMISSION_DENIED" in p.stderr
    p = vdcos(dc, "--token", reader[:-3] + "abc", "vm", "list", check=False)
    assert p.returncode == 1 and "UNAUTHENTICATED" in p.stderr
    listed = jq(dc, "token", "list")["tokens"]  # type: ignore[index]
    assert {t["name"] for t in listed} >= {"ops", "auditor"} and reader not in json.dumps(listed)


def test_a_project_from_the_cli_with_its_quota(dc: Path) -> None:
    """An admin makes a project, a quota and an owner's token; the owner makes a member's token;
    the member creates up to the quota and is refused beyond it with the quota named, sees only
    its project's VMs, and the operator's VMs are not found to it."""
    vdcos(dc, "project", "create", "acme", "--description", "a tenant")
    vdcos(dc, "quota", "set", "acme", "--vms", "2", "--vcpus", "unlimited")
    owner = jq(dc, "token", "create", "acme-admin", "--project", "acme", "--role", "owner")
    assert isinstance(owner, dict) and owner["project"] == "acme"
    member = jq(dc, "--token", str(owner["token"]), "token", "create", "dev", "--role", "member")
    assert isinstance(member, dict) and member["project"] == "acme"
    secret = str(member["token"])
    for name in ("acme-1", "acme-2"):
        made = jq(dc, "--token", secret, "vm", "create", name)
        assert made["spec"]["project"] == "acme"  # type: ignore[index]
    p = vdcos(dc, "--token", secret, "vm", "create", "acme-3", check=False)
    assert p.returncode == 1 and "RESOURCE_EXHAUSTED" in p.stderr and "quota vms is 2, 2 in use" in p.stderr, p.stderr
    assert {v["spec"]["name"] for v in jq(dc, "--token", secret, "vm", "list")["vms"]} == {  # type: ignore[index]
        "acme-1", "acme-2"}
    p = vdcos(dc, "--token", secret, "vm", "show", "web-1", check=False)
    assert p.returncode == 1 and "NOT_FOUND" in p.stderr
    p = vdcos(dc, "--token", secret, "nodes", check=False)
    assert p.returncode == 1 and "PERMISSION_DENIED" in p.stderr and "in project acme" in p.stderr
    shown = vdcos(dc, "--token", secret, "quota", "show", "acme").stdout
    assert "vms" in shown and " 2 " in shown
    # A certificate credential (Incus's restricted certificates): the owner has a reader's key,
    # made on this side, certified; the certificate reads the project's VMs and changes nothing.
    made = jq(dc, "--token", str(owner["token"]), "token", "create", "robot", "--role", "reader",
              "--certificate", str(dc / "robot"))
    assert isinstance(made, dict) and made["certificate"] and made["project"] == "acme"
    assert (Path(str(made["key"])).stat().st_mode & 0o777) == 0o600
    robot = ("--cert", str(made["cert"]), "--key", str(made["key"]))
    assert {v["spec"]["name"] for v in jq(dc, *robot, "vm", "list")["vms"]} == {"acme-1", "acme-2"}  # type: ignore[index]
    p = vdcos(dc, *robot, "vm", "delete", "acme-1", check=False)
    assert p.returncode == 1 and "PERMISSION_DENIED" in p.stderr and "reader in project acme" in p.stderr
    p = vdcos(dc, "project", "delete", "acme", check=False)
    assert p.returncode == 1 and "FAILED_PRECONDITION" in p.stderr and "2 vms" in p.stderr
    for name in ("acme-1", "acme-2"):
        vdcos(dc, "--token", secret, "vm", "delete", name)
    vdcos(dc, "project", "delete", "acme")
    # Its tokens went with it (each replica rereads a token within 2 s).
    wait_until(lambda: "UNAUTHENTICATED" in vdcos(dc, "--token", secret, "vm", "list", check=False).stderr,
               timeout=15, every=0.5)
    assert "UNAUTHENTICATED" in vdcos(dc, *robot, "vm", "list", check=False).stderr  # its certificate too


def test_login_keeps_a_token_per_datacenter(dc: Path, tmp_path: Path) -> None:
    """`vdcos login` with cluster.json and a token, from a machine with no datacenter of its own:
    later commands use that context; the file is its owner's only; a bad token is not kept."""
    import os
    import sys

    reader = token(dc, "laptop", "reader")
    env = {**os.environ, "VDCOS_CONFIG": str(tmp_path / "config.json")}
    elsewhere = tmp_path / "no-dc"  # --home without a datacenter: the context is the one used

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vdcos.cli.main", "--home", str(elsewhere), *args], env=env,
                              input=stdin, capture_output=True, text=True, timeout=60)
    bad = cli("login", "prod", "--cluster", str(dc / "cluster.json"), stdin=reader[:-4] + "abcd\n")
    assert bad.returncode == 1 and "UNAUTHENTICATED" in bad.stderr and not (tmp_path / "config.json").exists()
    ok = cli("login", "prod", "--cluster", str(dc / "cluster.json"), stdin=reader + "\n")
    assert ok.returncode == 0, ok.stderr
    assert stat.S_IMODE((tmp_path / "config.json").stat().st_mode) == 0o600
    listed = cli("-o", "json", "vm", "list")
    assert listed.returncode == 0 and "web-1" in listed.stdout, listed.stderr
    refused = cli("vm", "delete", "web-1")
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
    assert "prod" in cli("context", "list").stdout
    assert cli("logout").returncode == 0
    gone = cli("vm", "list")
    assert gone.returncode == 2 and "vdcos login" in gone.stderr


def buf_curl(s: LocalDatacenter, secret: str | None, method: str, body: str,
             schema_from: str | None = None) -> dict[str, object]:
    """`method` called with `secret` (None: no credentials), the schema read through
    reflection with `schema_from` (default: the same secret; reflection needs an identity)."""
    assert BUF.exists(), f"{BUF} is missing: `make setup` installs it"
    auth = [] if secret is None else ["-H", f"Authorization: Bearer {secret}"]
    auth += ["--reflect-header", f"Authorization: Bearer {schema_from or secret}"]
    p = subprocess.run([str(BUF), "curl", "--protocol", "grpc", "--cacert", s.ca, *auth, "--data", body,
                        f"https://{s.api[0]}/vdcos.v1.{method}"], capture_output=True, text=True, timeout=60)
    out = (p.stdout or p.stderr).strip()
    got = json.loads(out) if out.startswith("{") else {"code": "failure", "message": out}
    assert isinstance(got, dict)
    return got


def test_an_outside_client_with_the_ca_and_a_token(dc: Path) -> None:
    s = state(dc)
    reader = token(dc, "outside", "reader")
    listed = buf_curl(s, reader, "VmService/ListVms", "{}")
    assert "web-1" in {v["spec"]["name"] for v in listed["vms"]}  # type: ignore[attr-defined, index]
    refused = buf_curl(s, reader, "VmService/DeleteVm", '{"name": "web-1"}')
    assert refused["code"] == "permission_denied", refused
    nobody = buf_curl(s, None, "VmService/ListVms", "{}", schema_from=reader)
    assert nobody["code"] == "unauthenticated", nobody
    schema = token(dc, "schema", "reader")
    accessor = next(t["accessor"] for t in jq(dc, "token", "list")["tokens"]  # type: ignore[index]
                    if t["name"] == "outside")
    vdcos(dc, "token", "revoke", accessor)
    wait_until(lambda: buf_curl(s, reader, "VmService/ListVms", "{}", schema_from=schema)["code"] == "unauthenticated",
               timeout=15, every=0.5)
    assert "web-1" in {v["spec"]["name"] for v in jq(dc, "vm", "list")["vms"]}  # type: ignore[index]


def test_insecure_is_explicit_and_loud(tmp_path: Path) -> None:
    home = tmp_path / "dev"
    try:
        up = vdcos(home, "up", "--insecure", "--hosts", "1")
        assert "WARNING: INSECURE" in up.stderr and "PLAINTEXT" in up.stdout
        assert json.loads((home / "cluster.json").read_text())["ca"] == "" and not (home / "pki").exists()
        p = vdcos(home, "vm", "list", check=False)  # the CLI does not fall back to plaintext by itself
        assert p.returncode == 2 and "--insecure" in p.stderr
        assert jq(home, "--insecure", "vm", "create", "dev-1")["spec"]["name"] == "dev-1"  # type: ignore[index]
        assert "INSECURE" in (home / "logs" / "scheduler.log").read_text()
    finally:
        vdcos(home, "down", "--purge", check=False)
