"""Test PKI for a dry run on one machine: CA, SuperLink certificate, node keys.

Never use these files in production: a real consortium's SuperLink
certificate comes from the coordinator's usual CA, and every institution
makes its own keys on its own machine, handing out only public halves.

For each institution it makes a SuperNode authentication key (EC P-384,
OpenSSH format, as ``flower-supernode --auth-supernode-private-key`` and
``flwr supernode register`` expect) and an Ed25519 identity key, and it
writes the roster of the identity keys.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from core.flower.roster import write_identity_key, write_roster

__all__ = ["DryRunPKI", "NodeFiles", "make_test_pki"]


@dataclass(frozen=True, slots=True)
class NodeFiles:
    """One institution's files."""

    name: str
    institution: int
    auth_key: Path
    auth_public: Path
    identity_key: Path


@dataclass(frozen=True, slots=True)
class DryRunPKI:
    """Paths of everything :func:`make_test_pki` wrote."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    roster: Path
    nodes: tuple[NodeFiles, ...]


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
    else:
        alt: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        builder = builder.add_extension(
            x509.SubjectAlternativeName(alt), critical=False
        ).add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    return builder.sign(signer, hashes.SHA256())


def make_test_pki(
    folder: str | Path,
    institutions: Sequence[str],
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
) -> DryRunPKI:
    """Write a CA, a SuperLink certificate for ``hosts`` and per-node keys.

    Institution ``i`` of ``institutions`` gets consortium id ``i``.
    """
    root = Path(folder)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = _certificate("fedshield test CA", ca_key, None, ca_key, ())
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = _certificate("superlink", server_key, ca.subject, ca_key, hosts)
    pem = serialization.Encoding.PEM
    _write(root / "ca.pem", ca.public_bytes(pem), 0o644)
    _write(root / "superlink.pem", server.public_bytes(pem), 0o644)
    _write(root / "superlink.key", _pem_key(server_key))
    nodes = []
    members = {}
    for i, name in enumerate(institutions):
        folder_i = root / "nodes" / name
        auth = ec.generate_private_key(ec.SECP384R1())
        _write(
            folder_i / "auth",
            auth.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ),
        )
        public = auth.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        _write(folder_i / "auth.pub", public + b"\n", 0o644)
        identity = Ed25519PrivateKey.generate()
        write_identity_key(folder_i / "identity.pem", identity)
        members[i] = (name, identity.public_key().public_bytes_raw())
        nodes.append(
            NodeFiles(
                name=name,
                institution=i,
                auth_key=folder_i / "auth",
                auth_public=folder_i / "auth.pub",
                identity_key=folder_i / "identity.pem",
            )
        )
    write_roster(root / "roster.json", members)
    return DryRunPKI(
        ca_cert=root / "ca.pem",
        server_cert=root / "superlink.pem",
        server_key=root / "superlink.key",
        roster=root / "roster.json",
        nodes=tuple(nodes),
    )
