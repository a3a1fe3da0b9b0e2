"""A local certificate authority and the broker's TLS certificate, made with `cryptography`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from safeloop.infra.kafka.secret_files import write_private

log = logging.getLogger(__name__)

BROKER_COMMON_NAME = "safeloop-broker"
_CA_COMMON_NAME = "safeloop local Kafka CA"
_VALID_DAYS = 825
# Renew when less than this is left, so a long-lived state dir never holds an expired cert.
_RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class TlsFiles:
    """Where the CA and the broker's key material live (PEM; keys readable by the owner only)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def broker_keystore(self) -> Path:
        """The broker's PKCS#8 key followed by its certificate chain (Kafka's PEM keystore)."""
        return self.root / "broker.pem"


def ensure_certificates(files: TlsFiles, hosts: Sequence[str]) -> bool:
    """Make the CA and a broker certificate for `hosts` unless valid ones exist; True if made."""
    if _still_valid(files, hosts):
        return False
    files.root.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, _CA_COMMON_NAME)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
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
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER_COMMON_NAME)]))
        .issuer_name(ca_name)
        .public_key(broker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # serverAuth for clients; clientAuth because the broker proves itself to its controller.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_private(
        files.ca_key,
        ca_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
    write_private(files.ca_cert, ca_cert.public_bytes(pem).decode())
    write_private(
        files.broker_keystore,
        broker_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        + broker_cert.public_bytes(pem).decode()
        + ca_cert.public_bytes(pem).decode(),
    )
    log.info("made a local CA and a broker certificate for %s in %s", ", ".join(hosts), files.root)
    return True


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _still_valid(files: TlsFiles, hosts: Sequence[str]) -> bool:
    """True when the broker certificate exists, covers `hosts` and is not about to expire."""
    if not (files.ca_cert.is_file() and files.broker_keystore.is_file()):
        return False
    try:
        certs = x509.load_pem_x509_certificates(files.broker_keystore.read_bytes())
    except ValueError:
        return False
    broker = certs[0]
    left = broker.not_valid_after_utc - dt.datetime.now(dt.UTC)
    if left < dt.timedelta(days=_RENEW_BEFORE_DAYS):
        return False
    try:
        san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(_alt_names(hosts)) <= set(san)
