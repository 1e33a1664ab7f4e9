"""The audit log's entries: one per mutating call, who made it, on what, and how it ended."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: float
    who: str          # user:admin, token:tok-...(name)
    role: str         # the role it held ("" for none)
    project: str      # the project of its role ("" for a cluster role)
    method: str       # /vdcos.v1.VmService/DeleteVm
    resource: str
    verb: str
    target: str       # what the request named (a VM, a network ...), or a count for batches
    code: str         # OK, PERMISSION_DENIED, NOT_FOUND ...
    message: str = ""  # the refusal's, cut short
    replica: str = ""  # the API replica that served it
