"""Certificate expiry: warn 30 days before any configured or presented certificate ends.

Covers the CA and client files of every uplink, and the certificate each
server presents on connect. The status page lists them all with days left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger("floorlink.certificates")

WARN_DAYS = 30


@dataclass
class CertificateStatus:
    uplink: str
    which: str  # ca, client, server
    subject: str
    not_after: float
    source: str

    @property
    def days_left(self) -> float:
        return (self.not_after - time.time()) / 86400

    @property
    def expiring(self) -> bool:
        return self.days_left < WARN_DAYS

    def view(self) -> dict[str, object]:
        return {"uplink": self.uplink, "which": self.which, "subject": self.subject,
                "source": self.source, "not_after": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.not_after)),
                "days_left": round(self.days_left, 1), "expiring": self.expiring}


def _status(cert: x509.Certificate, uplink: str, which: str, source: str) -> CertificateStatus:
    return CertificateStatus(uplink, which, cert.subject.rfc4514_string(),
                             cert.not_valid_after_utc.timestamp(), source)


def from_der(der: bytes, uplink: str, source: str) -> CertificateStatus | None:
    try:
        from cryptography import x509

        return _status(x509.load_der_x509_certificate(der), uplink, "server", source)
    except ValueError:
        return None


def from_file(path: Path, owner: str, which: str) -> list[CertificateStatus]:
    """Every certificate in a file: PEM (a CA bundle holds several) or DER (as OPC UA
    certificates often come)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        log.warning("%s: cannot read %s certificate %s: %s", owner, which, path, exc.strerror)
        return []
    from cryptography import x509  # ~8 MB: only for agents that have certificates

    try:
        certs = (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                 else [x509.load_der_x509_certificate(data)])
    except ValueError as exc:
        log.warning("%s: %s certificate %s is neither PEM nor DER: %s", owner, which, path, exc)
        return []
    return [_status(cert, owner, which, str(path)) for cert in certs]


def warn_if_expiring(statuses: list[CertificateStatus]) -> None:
    for status in statuses:
        if status.expiring:
            log.warning("%s: the %s certificate %s (%s) expires in %.0f days",
                        status.uplink, status.which, status.subject, status.source,
                        status.days_left)
