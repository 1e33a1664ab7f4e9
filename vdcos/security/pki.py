"""The datacenter's certificate authority: one CA per datacenter, made by `vdcos up`, that
signs a certificate for every etcd member, API/scheduler replica, node agent and operator.

Identities are in the subject, as Kubernetes puts them (CN = who, O = what kind):
`etcd:NAME`, `scheduler:NAME`, `node:NAME` (the agent of that node), `user:NAME` and
`cred:ACCESSOR` (a credential's certificate, apiserver/tokens.py), `monitor:NAME` (a metrics
scraper: the datacenter's Prometheus, metrics/http.py), `dashboard:NAME` (the web dashboard's
server, which reads Prometheus with it; vdcos/dashboard/), with O one of the GROUPS
below. The components' certificates are for client and server use, for loopback and
`localhost`: etcd members use one certificate for both peers and clients, and the uplink of a
simulated host reaches etcd over a UNIX socket whose TLS name is `localhost`. A credential's
certificate is for client use only and names no host, so that no client would take its holder
for a server.

Keys are ECDSA P-256: a TLS handshake signs with the server's key, and P-256 signs ~20 times
faster than RSA-2048, which counts for clients that connect once per command."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The kinds of identity, each a certificate's O.
GROUPS = {"etcd": "vdcos:etcd", "scheduler": "vdcos:control-plane", "node": "vdcos:nodes", "user": "vdcos:users",
          "cred": "vdcos:credentials", "monitor": "vdcos:monitoring", "dashboard": "vdcos:dashboards"}
# The name a server of each kind answers to, in its certificate alone: our clients check it
# (security/tls.py's secure_channel), so no other certificate of the CA passes for an API replica
# or an etcd member, whatever address it was reached at (every component's names 127.0.0.1).
API_NAME = "api.vdcos.internal"
ETCD_NAME = "etcd.vdcos.internal"
ROLE_NAMES = {"scheduler": (API_NAME,), "etcd": (ETCD_NAME,)}
CA_DAYS = 3650
LEAF_DAYS = 365


@dataclass(frozen=True)
class TlsFiles:
    """One identity's files: the CA it trusts and, to prove who it is, its certificate and key
    (none for a client that only checks the server)."""
    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def read(self) -> tuple[bytes, bytes | None, bytes | None]:
        return (self.ca.read_bytes(), self.cert.read_bytes() if self.cert else None,
                self.key.read_bytes() if self.key else None)


@dataclass(frozen=True)
class Identity:
    kind: str   # a key of GROUPS
    name: str

    @property
    def common_name(self) -> str:
        return f"{self.kind}:{self.name}"

    @classmethod
    def of(cls, cert_pem: bytes) -> Identity | None:
        """Who a certificate (already verified by TLS) names, if it is one of ours."""
        cert = x509.load_pem_x509_certificate(cert_pem)
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if not cn or not org:
            return None
        kind, sep, name = str(cn[0].value).partition(":")
        if not sep or not name or GROUPS.get(kind) != org[0].value:
            return None
        return cls(kind, name)


def verified_identity(cert_pem: bytes, ca_pem: bytes) -> tuple[Identity, dt.datetime] | None:
    """Who a certificate names, and until when, if `ca_pem`'s key signed it and it is valid now
    (TLS checked the same at the handshake: this is for the code that acts on the identity, so
    that it never trusts a certificate whose path it did not see verified)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return None
    now = dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return None
    who = Identity.of(cert_pem)
    return None if who is None else (who, cert.not_valid_after_utc)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Whole or not at all, with `mode` set before a byte is written (also on a .tmp a crash left)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def issued(folder: Path, who: Identity) -> TlsFiles:
    """Where the CA in `folder` keeps `who`'s certificate and key."""
    base = who.common_name.replace(":", "-")
    return TlsFiles(folder / "ca.pem", folder / f"{base}.pem", folder / f"{base}-key.pem")


class Authority:
    """The CA in `folder` (ca.pem, ca-key.pem readable by its owner only), and what it issued
    beside it: NAME.pem and NAME-key.pem."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cert_path = folder / "ca.pem"
        self._key_path = folder / "ca-key.pem"
        self._key = serialization.load_pem_private_key(self._key_path.read_bytes(), None)
        self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    @classmethod
    def ensure(cls, folder: Path, datacenter: str) -> Authority:
        """The CA in `folder`, made first if there is none (a datacenter keeps its CA for life:
        every certificate it issued stays valid across `down` and `up`)."""
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not (folder / "ca.pem").exists():
            key = ec.generate_private_key(ec.SECP256R1())
            name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"vdcos datacenter {datacenter} CA"),
                              x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vdcos")])
            now = dt.datetime.now(dt.timezone.utc)
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
                    .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                    .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                                 key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                 key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                 decipher_only=False), critical=True)
                    .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                    .sign(key, hashes.SHA256()))
            _write(folder / "ca-key.pem", key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
            _write(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
        return cls(folder)

    def issue(self, who: Identity, days: int = LEAF_DAYS, names: Sequence[str] = ()) -> TlsFiles:
        """A certificate for `who`, kept if one for the same subject naming at least `names` is
        there and valid for at least another day, else made anew. It names localhost, 127.0.0.1,
        its kind's ROLE_NAMES, and `names` too (a host's name and addresses: what peers check when
        they reach it)."""
        if who.kind not in GROUPS:
            raise ValueError(f"unknown identity kind {who.kind!r}; one of {sorted(GROUPS)}")
        files = issued(self.folder, who)
        assert files.cert and files.key
        sans = _sans(("localhost", "127.0.0.1", *ROLE_NAMES.get(who.kind, ()), *names))
        if files.cert.exists() and files.key.exists() and self._still_good(files.cert.read_bytes(), who, sans):
            return files
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._certificate(key.public_key(), who, sans, days)
        _write(files.key, key_pem(key), 0o600)
        _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
        return files

    def sign(self, csr_pem: bytes, who: Identity, names: Sequence[str] = (), days: int = LEAF_DAYS,
             client_only: bool = False) -> bytes:
        """A certificate for `who` and `names` on the key of a signing request (a host joining, a
        credential's holder: its key never leaves it). Whatever subject the request asks for, the
        certificate says `who`: the caller decided who that is. `client_only`: for client use,
        naming no host."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("the signing request's signature does not match its key")
        key = csr.public_key()
        if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
            raise ValueError("the signing request's key must be ECDSA or RSA")
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
            raise ValueError("an RSA key must have at least 2048 bits")
        sans = [] if client_only else _sans(("localhost", "127.0.0.1", *names))
        return self._certificate(key, who, sans, days, client_only).public_bytes(serialization.Encoding.PEM)

    def _certificate(self, public_key: CertificatePublicKeyTypes, who: Identity, sans: list[x509.GeneralName],
                     days: int, client_only: bool = False) -> x509.Certificate:
        if who.kind not in GROUPS:
            raise ValueError(f"unknown identity kind {who.kind!r}; one of {sorted(GROUPS)}")
        now = dt.datetime.now(dt.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, who.common_name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, GROUPS[who.kind])])
        ca_ski = self._cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert isinstance(self._key, ec.EllipticCurvePrivateKey)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client_only else [ExtendedKeyUsageOID.SERVER_AUTH,
                                                                        ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self._cert.subject)
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                                                data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self._key, hashes.SHA256())

    def _still_good(self, pem: bytes, who: Identity, sans: list[x509.GeneralName]) -> bool:
        cert = x509.load_pem_x509_certificate(pem)
        left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
        try:
            has = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            has = []
        return (Identity.of(pem) == who and cert.issuer == self._cert.subject and left > dt.timedelta(days=1)
                and set(map(repr, has)) >= set(map(repr, sans)))


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def signing_request(key: ec.EllipticCurvePrivateKey, who: Identity, names: Sequence[str] = ()) -> bytes:
    """What a joining host sends to be certified: its public key, who it says it is, its names."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, who.common_name)]))
           .add_extension(x509.SubjectAlternativeName(_sans(names or ("localhost",))), critical=False)
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """A key (or anything secret): readable by its owner only, from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write(path, data)


def _sans(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for n in dict.fromkeys(names):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out
