"""A project is two records made together: `/vdcos/projects/<name>` (what it is) and
`/vdcos/quotas/<name>` (its limits and use). A quota record exists exactly while its project
does, so a create that charges it also proves, in the same transaction, that the project is
still there.

Charging is part of the transaction that creates the thing charged: `charge` for the
read-modify-write of a volume or a network, and the placement worker's batch for VMs
(scheduler/worker.py), which reads the quota through its cache and compares it the same way.
Two creates that read the same use can never both commit: the second finds the record changed,
reads it again and is refused if the first took the last of it (Placement's bug 1719933 was
the check and the charge in different transactions).
"""
from __future__ import annotations

import json
import time

from vdcos.errors import AlreadyExists, FailedPrecondition, NotFound, QuotaExceeded
from vdcos.model import Project, Quota, Usage, decode, dumps
from vdcos.model.project import QUOTA_FIELDS
from vdcos.security.tokens import TokenRecord
from vdcos.state import keys
from vdcos.state.rmw import Reads, Write, read_modify_write
from vdcos.state.store import Delete, Op, Put, Store


def get(store: Store, name: str) -> Project:
    kv = store.get(keys.project(name))
    if kv is None:
        raise NotFound(f"project {name!r} not found")
    return decode(Project, json.loads(kv.value))


def list_projects(store: Store) -> list[Project]:
    kvs, _ = store.get_prefix(keys.PROJECTS)
    return sorted((decode(Project, json.loads(kv.value)) for kv in kvs), key=lambda p: p.name)


def quota(store: Store, name: str) -> Quota:
    kv = store.get(keys.quota(name))
    if kv is None:
        raise NotFound(f"project {name!r} not found")
    return decode(Quota, json.loads(kv.value))


def create(store: Store, name: str, description: str = "") -> tuple[Project, Quota]:
    def attempt(r: Reads) -> Write[tuple[Project, Quota]]:
        r.load(keys.project(name), keys.quota(name))
        if r.kv(keys.project(name)) is not None or r.kv(keys.quota(name)) is not None:
            raise AlreadyExists(f"project {name!r} already exists")
        p, q = Project(name, description, time.time()), Quota(name)
        return Write((p, q), [Put(keys.project(name), dumps(p)), Put(keys.quota(name), dumps(q))])
    return read_modify_write(store, attempt, f"project {name}")


def delete(store: Store, name: str) -> None:
    """Only an empty project goes (its use, kept with every create and delete, says so); its
    tokens are revoked with it, so none outlives it into a later project of the same name."""
    def attempt(r: Reads) -> Write[None]:
        q = r.get(Quota, keys.quota(name))
        if q is None:
            raise NotFound(f"project {name!r} not found")
        if not q.used.empty:
            held = ", ".join(f"{getattr(q.used, f)} {f}" for f in ("vms", "networks", "volumes", "snapshots")
                             if getattr(q.used, f))
            raise FailedPrecondition(f"project {name!r} still owns {held or 'resources'}; delete them first")
        tokens, _ = store.get_prefix(keys.TOKENS)
        ops: list[Op] = [Delete(keys.project(name)), Delete(keys.quota(name))]
        for kv in tokens:
            rec = TokenRecord.from_bytes(kv.value)
            if rec.project == name and not rec.revoked:
                r.track(kv)
                ops.append(Put(kv.key, rec.revoke().to_bytes()))
        return Write(None, ops)
    read_modify_write(store, attempt, f"project {name}")


def set_limits(store: Store, name: str, limits: dict[str, int]) -> Quota:
    """New limits; a limit below the current use stops new use, and takes nothing away."""
    def attempt(r: Reads) -> Write[Quota]:
        q = r.get(Quota, keys.quota(name))
        if q is None:
            raise NotFound(f"project {name!r} not found")
        new = q.with_limits(**limits)
        return Write(new, [Put(keys.quota(name), dumps(new))] if new != q else [])
    return read_modify_write(store, attempt, f"quota of project {name}")


def charge(r: Reads, project: str, more: Usage) -> list[Op]:
    """The write that charges (or, negative, releases) `more` to a project's quota, in the
    caller's transaction, which compares the quota record read here; QuotaExceeded instead when
    it would pass a limit. No project ("") charges nothing."""
    if not project or more.empty:
        return []
    q = r.get(Quota, keys.quota(project))
    if q is None:
        if min(getattr(more, f) for f in QUOTA_FIELDS) < 0:
            return []  # a release: nothing left to give back to
        raise NotFound(f"project {project!r} not found")
    bad = q.violations(more)
    if bad:
        raise QuotaExceeded("; ".join(map(str, bad)), details=bad)
    return [Put(keys.quota(project), dumps(q.charged(more)))]
