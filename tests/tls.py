"""Certificates a test makes for itself: a CA, a server certificate for 127.0.0.1 and localhost, a client
certificate, and a client certificate from a CA nobody trusts (`cryptography`, written as PEM files)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trimtab.config.tls import TlsConfig


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server: Pem  # what trimtab's processes present, serving and calling
    client: Pem  # an outside client's
    stranger: Pem  # signed by another CA

    def tls(self, client_auth: bool = True) -> TlsConfig:
        """The config a trimtab process of this deployment runs with."""
        return TlsConfig(
            enabled=True,
            cert_file=self.server.cert,
            key_file=self.server.key,
            ca_file=self.ca,
            client_auth=client_auth,
        )

    def env(self, client_auth: bool = True) -> dict[str, str]:
        """The same as TRIMTAB_ variables."""
        tls = self.tls(client_auth)
        return {
            "TRIMTAB_TLS__ENABLED": "true",
            "TRIMTAB_TLS__CERT_FILE": str(tls.cert_file),
            "TRIMTAB_TLS__KEY_FILE": str(tls.key_file),
            "TRIMTAB_TLS__CA_FILE": str(tls.ca_file),
            "TRIMTAB_TLS__CLIENT_AUTH": str(client_auth).lower(),
        }

    def client_context(self, identity: Pem | None) -> ssl.SSLContext:
        """An HTTPS client's context: trusts the CA, presents `identity` if given."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        if identity is not None:
            context.load_cert_chain(str(identity.cert), str(identity.key))
        return context


def make_certificates(directory: Path) -> Certificates:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _authority("trimtab test CA")
    stranger_key, stranger_cert = _authority("someone else's CA")
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    # A trimtab process serves and calls other trimtab servers with one certificate: both purposes.
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    server = _leaf("trimtab process", ca_key, ca_cert, both, names)
    client = _leaf("trimtab client", ca_key, ca_cert, [ExtendedKeyUsageOID.CLIENT_AUTH], [])
    stranger = _leaf("a stranger", stranger_key, stranger_cert, [ExtendedKeyUsageOID.CLIENT_AUTH], [])
    ca_path = directory / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return Certificates(
        ca=ca_path,
        server=_write(directory, "server", *server),
        client=_write(directory, "client", *client),
        stranger=_write(directory, "stranger", *stranger),
    )


def _authority(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**_usage(cert_sign=True)), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    name: str,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    purposes: list[x509.ObjectIdentifier],
    names: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(**_usage(cert_sign=False)), critical=True)
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _usage(cert_sign: bool) -> dict[str, bool]:
    return {
        "digital_signature": not cert_sign,
        "content_commitment": False,
        "key_encipherment": False,
        "data_encipherment": False,
        "key_agreement": False,
        "key_cert_sign": cert_sign,
        "crl_sign": cert_sign,
        "encipher_only": False,
        "decipher_only": False,
    }


def _write(directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Pem:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return Pem(cert_path, key_path)
