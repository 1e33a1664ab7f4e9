"""Bearer tokens, as Nomad's ACL tokens: a public accessor id and a secret, of which etcd keeps
only the SHA-256 (a secret is 32 random bytes: no password to stretch). The bearer string is
`vdcos.<accessor>.<secret>`, shown once when the token is made.

Pure: making, parsing and checking tokens and their records. Where they are kept is the API's
business (vdcos/apiserver/tokens.py)."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import asdict, dataclass, replace

PREFIX = "vdcos"
CLUSTER_ROLES = ("admin", "reader", "bootstrap")
PROJECT_ROLES = ("owner", "member", "reader")
_ACCESSOR = re.compile(r"tok-[0-9a-f]{12}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, URL-safe base64 without padding


@dataclass(frozen=True)
class TokenRecord:
    accessor: str
    secret_sha256: str
    name: str
    role: str
    created_at: float
    expires_at: float = 0.0  # 0: never
    revoked: bool = False
    project: str = ""  # "": a cluster role; else a role in that project

    def usable(self, now: float) -> bool:
        return not self.revoked and (not self.expires_at or now < self.expires_at)

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.secret_sha256, _digest(secret))

    def revoke(self) -> TokenRecord:
        return replace(self, revoked=True)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenRecord:
        return cls(**json.loads(data))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def valid_accessor(value: str) -> bool:
    return _ACCESSOR.fullmatch(value) is not None


def mint(name: str, role: str, now: float, ttl_s: float = 0.0, project: str = "") -> tuple[TokenRecord, str]:
    """A new token's record and its bearer string (the only copy of the secret)."""
    roles = PROJECT_ROLES if project else CLUSTER_ROLES
    if role not in roles:
        raise ValueError(f"role must be one of {', '.join(roles)}")
    accessor = f"tok-{secrets.token_hex(6)}"
    secret = secrets.token_urlsafe(32)
    rec = TokenRecord(accessor, _digest(secret), name, role, now, now + ttl_s if ttl_s > 0 else 0.0, project=project)
    return rec, f"{PREFIX}.{accessor}.{secret}"


def parse_bearer(value: str) -> tuple[str, str] | None:
    """(accessor, secret) of an `authorization` header's value `Bearer vdcos.<accessor>.<secret>`."""
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer":
        return None
    prefix, _, rest = token.strip().partition(".")
    accessor, _, secret = rest.partition(".")
    if prefix != PREFIX or not valid_accessor(accessor) or not _SECRET.fullmatch(secret):
        return None
    return accessor, secret
