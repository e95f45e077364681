"""Certificates of the local control plane: a CA, the API server's serving certificate, one
client certificate per identity, and the service-account signing key.

Each component authenticates as the identity it has in a real cluster (the node agent as
`system:node:<node>` in `system:nodes`, so the Node authorizer and NodeRestriction judge it as
they judge a kubelet), so RBAC is exercised, not bypassed. Everything is generated on first use
and kept; keys are written 0600. Every file is written whole or not at all (an interrupted
`make cluster-up` leaves no half certificate that the next run would take as made).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ml.io import write_bytes

VALIDITY = datetime.timedelta(days=365)

# The API server answers on loopback and inside the cluster under the names clients use.
SERVER_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVER_IPS = ("127.0.0.1", "10.96.0.1")


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Identity:
    name: str
    """File stem, e.g. `admin`."""
    user: str
    """The certificate's CN: the user name the API server sees."""
    groups: tuple[str, ...] = ()
    """The certificate's O entries: the groups."""


class Pki:
    """The files under one directory; `ensure()` creates whatever is missing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def ca(self) -> Pair:
        return Pair(self.directory / "ca.crt", self.directory / "ca.key")

    @property
    def server(self) -> Pair:
        return Pair(self.directory / "apiserver.crt", self.directory / "apiserver.key")

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_public(self) -> Path:
        return self.directory / "sa.pub"

    def client(self, identity: Identity) -> Pair:
        """The identity's certificate and key, issued by the CA on first use."""
        pair = Pair(
            self.directory / f"{identity.name}.crt", self.directory / f"{identity.name}.key"
        )
        if not (pair.cert.is_file() and pair.key.is_file()):
            subject = [x509.NameAttribute(NameOID.COMMON_NAME, identity.user)]
            subject += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in identity.groups]
            self._issue(pair, x509.Name(subject), ExtendedKeyUsageOID.CLIENT_AUTH, [])
        return pair

    def serving(self, name: str, hosts: tuple[str, ...]) -> Pair:
        """A serving certificate for the DNS names `hosts` (a local stand-in of a server that
        has a name elsewhere, e.g. the git server), issued by the CA on first use."""
        pair = Pair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        if not (pair.cert.is_file() and pair.key.is_file()):
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
            names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
            self._issue(pair, subject, ExtendedKeyUsageOID.SERVER_AUTH, names)
        return pair

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.ca.cert.is_file() and self.ca.key.is_file()):
            self._make_ca()
        if not (self.server.cert.is_file() and self.server.key.is_file()):
            names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
            names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
            subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")])
            self._issue(self.server, subject, ExtendedKeyUsageOID.SERVER_AUTH, names)
        if not (self.service_account_key.is_file() and self.service_account_public.is_file()):
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_key(self.service_account_key, key)
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            write_bytes(self.service_account_public, public)

    def _make_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlops-gitops local cluster CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca.key, key)
        write_bytes(self.ca.cert, cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        pair: Pair,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        names: list[x509.GeneralName],
    ) -> None:
        ca_key = serialization.load_pem_private_key(self.ca.key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert.read_bytes())
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{self.ca.key}: not the EC key this tool writes")
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_key(pair.key, key)
        write_bytes(pair.cert, cert.public_bytes(serialization.Encoding.PEM))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_bytes(path, data, mode=0o600)
