"""Self-signed TLS for the simulator: a private CA and a server certificate.

Real PVE nodes serve a certificate signed by the cluster's own CA
(``pve-root-ca.pem``); clients either trust that CA file or pin the
certificate's SHA-256 fingerprint.  We do the same, so both trust modes of the
provisioner can be exercised.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the CA certificate and the server's certificate and key."""

    cafile: Path
    certfile: Path
    keyfile: Path

    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the server certificate, PVE style (AA:BB:...)."""
        cert = x509.load_pem_x509_certificate(self.certfile.read_bytes())
        return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PVE Cluster Manager CA (pvesim)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def ensure_certificates(state_dir: Path, host: str, node: str) -> TlsFiles:
    """Create (once) a CA and a server certificate valid for ``host``.

    The files live in ``state_dir`` so that a restarted simulator keeps the
    same fingerprint, like a real node.  A certificate that does not cover
    ``host`` is re-issued from the existing CA.
    """
    files = TlsFiles(
        cafile=state_dir / "pve-root-ca.pem",
        certfile=state_dir / "pve-ssl.pem",
        keyfile=state_dir / "pve-ssl.key",
    )
    ca_key_path = state_dir / "pve-root-ca.key"
    now = dt.datetime.now(dt.UTC)
    if not (files.cafile.exists() and ca_key_path.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Proxmox Virtual Environment (pvesim)"))
            .issuer_name(_name("Proxmox Virtual Environment (pvesim)"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(
            ca_key_path,
            ca_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        files.cafile.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        files.certfile.unlink(missing_ok=True)

    if files.certfile.exists() and files.keyfile.exists() and _covers(files.certfile, host):
        return files

    ca_key_loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(files.cafile.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(node), x509.DNSName("localhost")]
    try:
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(node))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key_loaded, hashes.SHA256())
    )
    _write_private(
        files.keyfile,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    files.certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def _covers(certfile: Path, host: str) -> bool:
    cert = x509.load_pem_x509_certificate(certfile.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        return ipaddress.ip_address(host) in san.get_values_for_type(x509.IPAddress)
    except ValueError:
        return host in san.get_values_for_type(x509.DNSName)
