"""TLS for NATS: a private CA and a server certificate it signs, for a deployment that has no
PKI of its own (docker-compose). Clients trust the CA (NATS_TLS_CA); nothing is self-signed
per connection."""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 825  # the longest a server certificate may live for clients that check


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)


def make_certificates(folder: Path, hosts: list[str]) -> dict[str, str]:
    """ca.pem, server.pem and server-key.pem in `folder` (kept if there), for `hosts`; returns
    nats-server's tls block."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_cert, cert, key_path = folder / "ca.pem", folder / "server.pem", folder / "server-key.pem"
    if not (ca_cert.exists() and cert.exists() and key_path.exists()):
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("llmbus NATS CA"))
            .issuer_name(_name("llmbus NATS CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0]))
            .issuer_name(ca.subject)
            .public_key(server_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(key_path, server_key)
        ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    return tls_block(folder)


def tls_block(folder: Path) -> dict[str, str]:
    return {"cert_file": str(folder / "server.pem"), "key_file": str(folder / "server-key.pem")}


def has_certificates(folder: Path) -> bool:
    return (folder / "server.pem").is_file() and (folder / "server-key.pem").is_file()
