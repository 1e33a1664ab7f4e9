"""NodeService: list, get, cordon, drain, uncordon and watch nodes, and certify a host that joins."""
from __future__ import annotations

import ipaddress
import json
import re
import time
from typing import AsyncIterator

from vdcos.apiserver import convert, validate
from vdcos.apiserver.common import Ctx, blocking, check_name, check_node_and_reason, watch
from vdcos.apiserver.operations import Operations
from vdcos.apiserver.authz import caller
from vdcos.apiserver.status import rpc, stream_rpc
from vdcos.errors import AlreadyExists, FailedPrecondition
from vdcos.security.pki import Identity
from vdcos.state import access, keys
from vdcos.state.store import Compare, Put
from vdcos.v1 import node_service_pb2 as node_pb
from vdcos.v1 import node_service_pb2_grpc as node_grpc
from vdcos.v1 import types_pb2 as pb


class NodeServicer(node_grpc.NodeServiceServicer):
    def __init__(self, ops: Operations) -> None:
        self.ops = ops

    def _pb(self, name: str) -> pb.Node:
        return convert.node_to_pb(self.ops.node(name), self.ops.config(), self.ops.ha_states().get(name, ""))

    @rpc
    async def ListNodes(self, request: node_pb.ListNodesRequest, context: Ctx) -> node_pb.ListNodesResponse:
        out: validate.Violations = []
        validate.labels(dict(request.label_selector), "label_selector", out)
        validate.check(out)
        config = self.ops.config()
        ha = await blocking(self.ops.ha_states)
        return node_pb.ListNodesResponse(nodes=[convert.node_to_pb(v, config, ha.get(v.spec.name, ""))
                                                for v in self.ops.nodes(dict(request.label_selector))])

    @rpc
    async def GetNode(self, request: node_pb.GetNodeRequest, context: Ctx) -> node_pb.GetNodeResponse:
        check_name(request.name)
        return node_pb.GetNodeResponse(node=await blocking(self._pb, request.name))

    @rpc
    async def CordonNode(self, request: node_pb.CordonNodeRequest, context: Ctx) -> node_pb.CordonNodeResponse:
        check_node_and_reason(request.name, request.reason)
        await blocking(self.ops.cordon, request.name, request.reason, True)
        return node_pb.CordonNodeResponse(node=await blocking(self._pb, request.name))

    @rpc
    async def DrainNode(self, request: node_pb.DrainNodeRequest, context: Ctx) -> node_pb.DrainNodeResponse:
        check_node_and_reason(request.name, request.reason)
        if not request.dry_run:
            await blocking(self.ops.cordon, request.name, request.reason or "drain", True)
        rb = await blocking(self.ops.planning.drain, request.name, request.dry_run)
        if not request.dry_run:
            self.ops.emit("node.drained", request.name, node=request.name, rebalance=rb.id,
                          message=f"draining: {len(rb.steps)} VM(s) to move off by live migration")
        return node_pb.DrainNodeResponse(node=await blocking(self._pb, request.name), rebalance=convert.rebalance_to_pb(rb))

    @rpc
    async def UncordonNode(self, request: node_pb.UncordonNodeRequest, context: Ctx) -> node_pb.UncordonNodeResponse:
        check_name(request.name)
        await blocking(self.ops.cordon, request.name, "", False)
        return node_pb.UncordonNodeResponse(node=await blocking(self._pb, request.name))

    @stream_rpc
    async def WatchNodes(self, request: node_pb.WatchNodesRequest, context: Ctx) -> AsyncIterator[node_pb.WatchNodesResponse]:
        async for events, rev in watch(self.ops, keys.NODES):
            await blocking(self.ops.cache.wait_for_revision, rev, 2.0)
            for name in dict.fromkeys(keys.split(e.kv.key, keys.NODES)[0] for e in events):
                view = self.ops.cache.node(name)
                if view is None:
                    yield node_pb.WatchNodesResponse(type=pb.EVENT_TYPE_DELETE, node=pb.Node(name=name),
                                                     revision=rev)
                else:
                    yield node_pb.WatchNodesResponse(type=pb.EVENT_TYPE_PUT, revision=rev,
                                                     node=convert.node_to_pb(view, self.ops.config()))

    @rpc
    async def JoinNode(self, request: node_pb.JoinNodeRequest, context: Ctx) -> node_pb.JoinNodeResponse:
        out: validate.Violations = []
        validate.name(request.name, "name", out)
        if not request.csr_pem or len(request.csr_pem) > MAX_CSR:
            out.append(("csr_pem", f"a PEM certificate signing request of at most {MAX_CSR} bytes is required"))
        if len(request.addresses) > 8:
            out.append(("addresses", f"at most 8, got {len(request.addresses)}"))
        for i, a in enumerate(request.addresses[:8]):
            if not _address_ok(a):
                out.append((f"addresses[{i}]", f"{a[:80]!r} is not a host name or an IP address"))
        validate.check(out)
        authority = self.ops.authority
        if authority is None:
            raise FailedPrecondition("this API replica holds no CA key to certify a host with (started without "
                                     "--ca-dir)")
        try:
            cert = authority.sign(request.csr_pem.encode(), Identity("node", request.name), list(request.addresses))
        except ValueError as e:
            validate.check([("csr_pem", str(e))])
        who = caller()
        claim = json.dumps({"at": time.time(), "by": who.name if who else "", "addresses": list(request.addresses)})
        store = self.ops.store
        # One host per name, ever: the claim and the node's absence are compared in one commit.
        res = await blocking(store.txn, [Compare(keys.join(request.name), "create", "==", 0),
                                         Compare(keys.node_spec(request.name), "create", "==", 0)],
                             [Put(keys.join(request.name), claim.encode())])
        if not res.succeeded:
            raise AlreadyExists(f"node {request.name!r} exists or has joined already; a host joins under a new name")
        add_access = getattr(store, "add_access", None)
        if add_access is not None:
            await blocking(add_access, access.node_user(request.name), access.node_role(request.name),
                           access.node_grants(request.name))
        return node_pb.JoinNodeResponse(certificate_pem=cert.decode(), ca_pem=authority.cert_path.read_text(),
                                        etcd_endpoints=list(getattr(store, "endpoints", [])))


MAX_CSR = 16_384
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def _address_ok(value: str) -> bool:
    """An IP address, or a DNS name: what a certificate may name and a peer check."""
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return len(value) <= 253 and _HOST_NAME.fullmatch(value) is not None
