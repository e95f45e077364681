"""The local cluster's certificates: a chain that verifies, secrets kept private, and no half
file left behind by an interrupted `make cluster-up`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scripts.cluster.pki import Identity, Pair, Pki

ADMIN = Identity("admin", "kubernetes-admin", ("system:masters",))


def _verify(pki: Pki, pair: Pair) -> x509.Certificate:
    """The pair's certificate is signed by the CA and belongs to the pair's key."""
    ca = x509.load_pem_x509_certificate(pki.ca.cert.read_bytes())
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == cert.public_key()
    return cert


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _temporaries(pki: Pki) -> list[str]:
    """What an atomic write left behind (its temporary files start with a dot)."""
    return [p.name for p in pki.directory.iterdir() if p.name.startswith(".")]


def test_a_chain_that_verifies_with_private_keys(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.ensure()
    client = pki.client(ADMIN)
    subject = _verify(pki, client).subject
    assert subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "kubernetes-admin"
    names = _verify(pki, pki.server).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "kubernetes.default.svc" in names.value.get_values_for_type(x509.DNSName)
    for key in (pki.ca.key, pki.server.key, client.key, pki.service_account_key):
        assert _mode(key) == 0o600, key
    assert _mode(pki.ca.cert) & 0o044  # certificates are public: others read them
    assert _temporaries(pki) == []


@pytest.mark.parametrize("victim", ["apiserver.crt", "apiserver.key", "sa.pub", "admin.crt"])
def test_an_interrupted_write_leaves_nothing_the_next_run_takes_as_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, victim: str
) -> None:
    """Ctrl-C in the middle of writing one file: half of it on disk, then the interrupt. The next
    run must make a complete, verifying set, not keep the half file as if it were whole."""
    pki = Pki(tmp_path / "pki")
    real_write = Path.write_bytes

    def half_then_interrupt(path: Path, data: Any) -> int:
        if path.name == victim or path.name.startswith(f".{victim}."):
            real_write(path, bytes(data)[: len(data) // 2])
            raise KeyboardInterrupt
        return real_write(path, data)

    monkeypatch.setattr(Path, "write_bytes", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        pki.ensure()
        pki.client(ADMIN)
    monkeypatch.setattr(Path, "write_bytes", real_write)

    pki.ensure()
    _verify(pki, pki.server)
    _verify(pki, pki.client(ADMIN))
    serialization.load_pem_public_key(pki.service_account_public.read_bytes())
    assert _temporaries(pki) == []
