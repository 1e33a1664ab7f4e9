"""Which project's objects the current call may touch: the servicers' half of authorization
(authz.py decides which calls a role may make).

A cluster role (or a server without authentication) reaches every project and the objects of
none; a project's role reaches its project's alone. Another project's object is NOT_FOUND with
the words a missing one gets, so a caller learns nothing of what it may not see. Names stay
global, as S3's bucket names: a name another project holds is taken, and its create says so
(ALREADY_EXISTS), which reveals that the name is used and nothing about its object.
"""
from __future__ import annotations

from dataclasses import dataclass

from vdcos.apiserver.authz import caller
from vdcos.errors import NotFound


@dataclass(frozen=True)
class Scope:
    project: str | None  # None: every project's objects and those of none

    def sees(self, owner: str) -> bool:
        return self.project is None or owner == self.project

    def check(self, owner: str, what: str) -> None:
        """NOT_FOUND, as for a missing object, unless the caller may see `what` (its owner's)."""
        if not self.sees(owner):
            raise NotFound(f"{what} not found")

    def owner(self, requested: str) -> str:
        """The project a new object goes to: the caller's own, or for a cluster caller the one it
        named ("" = none)."""
        if self.project is None:
            return requested
        if requested and requested != self.project:
            raise NotFound(f"project {requested!r} not found")
        return self.project


EVERYTHING = Scope(None)


def current() -> Scope:
    who = caller()
    return Scope(who.project) if who is not None and who.project else EVERYTHING
