"""Certificates for OPC UA: floorlink's own application certificate, and the
trust decision about a server's.

The client certificate follows OPC 10000-6 6.2.2 (asyncua's generator): RSA 2048,
SHA-256, the application URI as a URI subject alternative name (servers reject a
client whose certificate and ApplicationDescription disagree), the host name as a
DNS name, and client and server authentication usages.

A server is trusted when its certificate, or the CA certificate that issued it,
sits in the trusted folder. Nothing else is: no system store, no first-use
acceptance unless the configuration asks for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

DEFAULT_URI = "urn:floorlink:{host}"


def default_application_uri() -> str:
    return DEFAULT_URI.format(host=socket.gethostname())


def make_application_certificate(cert_file: Path, key_file: Path, application_uri: str,
                                 host: str, days: int = 825) -> x509.Certificate:
    """Write a key (mode 0600) and a self-signed application certificate (PEM)."""
    from asyncua.crypto.cert_gen import (
        dump_private_key_as_pem,
        generate_private_key,
        generate_self_signed_app_certificate,
    )

    key = generate_private_key()
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri),
                                     x509.DNSName(host)]
    cert = generate_self_signed_app_certificate(
        key, f"floorlink@{host}", {"organizationName": "floorlink"}, names,
        [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH], days=days)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(mode=0o600, exist_ok=True)
    key_file.chmod(0o600)
    key_file.write_bytes(dump_private_key_as_pem(key))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert  # type: ignore[no-any-return]


def load_certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    loaded: x509.Certificate = (x509.load_pem_x509_certificate(data)
                                if b"-----BEGIN CERTIFICATE-----" in data
                                else x509.load_der_x509_certificate(data))
    return loaded


def application_uri_of(cert: x509.Certificate) -> str | None:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def thumbprint(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def describe(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}' (SHA-1 thumbprint {thumbprint(cert)})"


def file_name(cert: x509.Certificate) -> str:
    """A name a technician can recognise in a folder listing."""
    subject = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    common = str(subject[0].value) if subject else "server"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in common)
    return f"{safe}-{thumbprint(cert)[:16]}.der"


@dataclass(frozen=True)
class TrustDecision:
    trusted: bool
    reason: str = ""


def decide(cert: x509.Certificate, folder: Path) -> TrustDecision:
    """Trusted if the certificate itself, or the CA that issued it, is in `folder`."""
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return TrustDecision(False, f"the server certificate {describe(cert)} is outside its "
                                    f"validity ({cert.not_valid_before_utc:%Y-%m-%d} to "
                                    f"{cert.not_valid_after_utc:%Y-%m-%d})")
    der = cert.public_bytes(serialization.Encoding.DER)
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() not in (".der", ".pem", ".crt", ".cer"):
            continue
        try:
            anchor = load_certificate(path)
        except ValueError:
            continue  # not a certificate; a README or a key does not make anything trusted
        if anchor.public_bytes(serialization.Encoding.DER) == der:
            return TrustDecision(True)
        if anchor.subject == cert.issuer and _is_ca(anchor):
            try:
                cert.verify_directly_issued_by(anchor)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return TrustDecision(True)
    return TrustDecision(False, "")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
