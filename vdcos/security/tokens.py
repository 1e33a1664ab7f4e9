"""Bearer tokens, as Nomad's ACL tokens: a public accessor id and a secret, of which etcd keeps
only the SHA-256 (a secret is 32 random bytes: no password to stretch). The bearer string is
`vdcos.<accessor>.<secret>`, shown once when the token is made. A credential may instead be a
client certificate for `cred:<accessor>` (`certificate`): its record has no secret, and its
role, project, expiry and revocation work as a token's.

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
    certificate: bool = False  # proven by a certificate for cred:<accessor>, not by a secret

    def usable(self, now: float) -> bool:
        return not self.revoked and (not self.expires_at or now < self.expires_at)

    def matches(self, secret: str) -> bool:
        return not self.certificate and hmac.compare_digest(self.secret_sha256, _digest(secret))

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


def mint(name: str, role: str, now: float, ttl_s: float = 0.0, project: str = "",
         certificate: bool = False) -> tuple[TokenRecord, str]:
    """A new token's record and its bearer string (the only copy of the secret); with
    `certificate`, a certificate credential's record and no bearer string."""
    roles = PROJECT_ROLES if project else CLUSTER_ROLES
    if role not in roles:
        raise ValueError(f"role must be one of {', '.join(roles)}")
    accessor = f"tok-{secrets.token_hex(6)}"
    secret = "" if certificate else secrets.token_urlsafe(32)
    rec = TokenRecord(accessor, _digest(secret) if secret else "", name, role, now,
                      now + ttl_s if ttl_s > 0 else 0.0, project=project, certificate=certificate)
    return rec, f"{PREFIX}.{accessor}.{secret}" if secret else ""


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
