"""Storage pools, volumes, snapshots, and a guest disk as a hypervisor driver sees it."""
from __future__ import annotations

import enum
from dataclasses import dataclass


class PoolKind(enum.Enum):
    LOCAL = "local"      # a libvirt dir pool on one host: its volumes tie a VM to that host
    SHARED = "shared"    # a directory every host sees (NFS or Ceph RBD in a real rack)


class VolumeState(enum.Enum):
    CREATING = "creating"    # recorded and accounted; the owning host's agent makes the file
    AVAILABLE = "available"
    FAILED = "failed"        # the agent could not make it (message says why)


@dataclass(frozen=True, slots=True)
class Volume:
    name: str
    pool: PoolKind
    size_gib: int
    # The host whose pool holds the file (local), or the host that creates it (shared).
    host: str
    image: str = ""          # a base disk image from vdcos.storagepool.images; "" = blank
    vm: str = ""             # attached to; "" = free
    state: VolumeState = VolumeState.CREATING
    path: str = ""           # the file, once the agent made it
    message: str = ""
    created_at: float = 0.0
    # The snapshot it was made from (a restore); its file starts as that snapshot's content.
    snapshot: str = ""
    # A snapshot being taken of it: no migration, resize, attach or detach meanwhile.
    snapshotting: str = ""
    # While its VM live-migrates with copy-storage: the migration, the destination host whose
    # pool takes the copy (its space there is already accounted), and the copy's file once
    # that host's agent made it. The source file stays the volume's until the move completes.
    migration: str = ""
    moving_to: str = ""
    target_path: str = ""
    project: str = ""
    # The host whose guest had it open when it left its VM (the VM deleted, or the volume
    # detached): the record is free at once, the file only when that guest let go. Until its
    # agent clears this (or HA fences the host), no other guest opens it and no offline copy
    # or growth touches it: QEMU holds a write lock on an open image.
    open_on: str = ""

    @property
    def ties_to_host(self) -> bool:
        return self.pool is PoolKind.LOCAL


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A volume's content at one point in time: a read-only file in the volume's pool, made by
    the agent of `host` (from the running guest's disk by a backup job, or from the closed
    file). It does not depend on its volume afterwards: the volume may grow, move or go."""

    name: str
    volume: str
    pool: PoolKind
    host: str                # local: the host whose pool holds it; shared: the host that makes it
    size_gib: int            # the volume's size when taken; what a restore needs at least
    image: str = ""          # the volume's base image: a restored volume overlays the same one
    state: VolumeState = VolumeState.CREATING
    path: str = ""
    message: str = ""
    created_at: float = 0.0
    live: bool = False       # taken from a running guest
    project: str = ""        # its volume's


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """What a host's agent reports about a storage pool it sees (under its lease)."""

    host: str
    pool: PoolKind
    path: str
    capacity_gib: float
    available_gib: float
    volumes: int = 0


@dataclass(frozen=True, slots=True)
class Disk:
    """What a hypervisor driver needs to give a guest one volume."""

    volume: str
    path: str
    device: str              # vda, vdb, ... in the order of VmSpec.volumes
    size_gib: int = 0        # the volume's recorded size: a smaller disk is grown to it
