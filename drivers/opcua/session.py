"""Open an OPC UA session the way the configuration says, or say exactly why not.

Used by the driver and by `floorlink browse`, so that commissioning connects
with the same security as the running agent.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from pathlib import Path
from typing import Any

from agent.errors import DeviceUnreachable
from agent.settings.models import OpcUaSecurity

from . import certs

log = logging.getLogger("floorlink.opcua")

USER_REFUSED = ("BadUserAccessDenied", "BadIdentityTokenInvalid", "BadIdentityTokenRejected",
                "BadUserSignatureInvalid")
CLIENT_CERT_REFUSED = ("BadCertificateUntrusted", "BadSecurityChecksFailed",
                       "BadCertificateInvalid", "BadCertificateUriInvalid",
                       "BadCertificateUseNotAllowed", "BadCertificateTimeInvalid")


class ServerTrust:
    """The client's verdict on the server certificate, with the reason kept for the error
    message (asyncua reduces a refusal to a bare status code)."""

    def __init__(self, security: OpcUaSecurity) -> None:
        assert security.trusted_servers is not None
        self.folder: Path = security.trusted_servers
        self.first_use = security.trust_on_first_use
        self.refusal: str | None = None
        self.server_certificate: Any = None

    async def __call__(self, cert: Any, description: Any) -> None:
        from asyncua import ua
        from asyncua.common.utils import ServiceError

        self.server_certificate = cert
        decision = certs.decide(cert, self.folder)
        if decision.trusted:
            return
        if decision.reason:
            self.refusal = decision.reason
            raise ServiceError(ua.StatusCodes.BadCertificateTimeInvalid)
        if self.first_use and self._first_time(description):
            target = self.folder / certs.file_name(cert)
            target.write_bytes(cert.public_bytes(_der()))
            log.warning("trusting %s on first use; stored as %s", certs.describe(cert), target)
            return
        saved = self._save_rejected(cert)
        self.refusal = (f"the server certificate {certs.describe(cert)} is not trusted; to trust "
                        f"it, copy it into security.trusted_servers ({self.folder})"
                        + (f": it was saved as {saved}" if saved else ""))
        raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    def _first_time(self, description: Any) -> bool:
        """First use means no certificate for this application URI is trusted yet: a
        server whose certificate *changed* is refused, not silently re-trusted."""
        uri = getattr(description, "ApplicationUri", None)
        for path in self.folder.glob("*"):
            try:
                known = certs.load_certificate(path)
            except (ValueError, OSError):
                continue
            if certs.application_uri_of(known) == uri:
                return False
        return True

    def _save_rejected(self, cert: Any) -> Path | None:
        rejected = self.folder.parent / "rejected"
        try:
            rejected.mkdir(exist_ok=True)
            target = rejected / certs.file_name(cert)
            target.write_bytes(cert.public_bytes(_der()))
        except OSError:
            return None  # a read-only configuration folder: the thumbprint still identifies it
        return target


def _der() -> Any:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER


def _file(path: Path) -> Any:
    """asyncua guesses PEM or DER from the file name; '.key' would be read as DER."""
    from asyncua.crypto.uacrypto import CertProperties

    pem = b"-----BEGIN" in path.read_bytes()[:4096]
    return CertProperties(str(path), extension="pem" if pem else "der")


def _policy_class(name: str) -> Any:
    from asyncua.crypto import security_policies as sp

    return {"Basic256Sha256": sp.SecurityPolicyBasic256Sha256,
            "Aes128_Sha256_RsaOaep": sp.SecurityPolicyAes128Sha256RsaOaep,
            "Aes256_Sha256_RsaPss": sp.SecurityPolicyAes256Sha256RsaPss}[name]


async def open_session(endpoint: str, security: OpcUaSecurity, username: str | None,
                       password: str | None, request_timeout: float,
                       session_timeout: float = 60.0) -> Any:
    """A connected asyncua Client; raises DeviceUnreachable with what to change."""
    from asyncua import Client, ua

    client = Client(endpoint, timeout=request_timeout, auto_reconnect=False)
    # The driver watches its own subscriptions (so that a recreated one splits its
    # requests and marks the gap); asyncua's built-in stale watchdog stays idle.
    client._stale_check_margin = math.inf
    client.name = client.description = "floorlink"
    client.product_uri = "urn:floorlink"
    # A dead agent's session should not hold server resources for asyncua's default hour.
    client.session_timeout = session_timeout * 1000
    client.application_uri = certs.default_application_uri()
    trust: ServerTrust | None = None
    if username:
        client.set_user(username)
    if password:
        client.set_password(password)
    try:
        if security.mode != "None":
            assert security.certificate is not None
            assert security.private_key is not None
            own = certs.load_certificate(security.certificate)
            # The session's application URI must be the one in our certificate.
            client.application_uri = certs.application_uri_of(own) or client.application_uri
            trust = ServerTrust(security)
            client.certificate_validator = trust
            await client.set_security(
                _policy_class(security.policy), _file(security.certificate),
                _file(security.private_key), mode=getattr(ua.MessageSecurityMode, security.mode))
        started = time.monotonic()
        await client.connect()
        log.debug("connected to %s in %.2fs", endpoint, time.monotonic() - started)
    except BaseException as exc:
        await _discard(client)
        if isinstance(exc, Exception):
            raise DeviceUnreachable(explain(exc, endpoint, security, username, trust)) from exc
        raise
    return client


async def _discard(client: Any) -> None:
    try:
        client.disconnect_socket()
    except Exception as exc:  # already closed, or never opened
        log.debug("discarding a failed client: %s", exc)


def explain(error: BaseException, endpoint: str, security: OpcUaSecurity,
            username: str | None, trust: ServerTrust | None) -> str:
    from asyncua import ua

    where = f"cannot connect to {endpoint}"
    if trust is not None and trust.refusal:
        return f"{where}: {trust.refusal}"
    if isinstance(error, ua.UaStatusCodeError):
        name = ua.StatusCode(error.code).name
        if name in USER_REFUSED:
            who = f"user '{username}'" if username else "anonymous access"
            return (f"{where}: the server refused {who} ({name}); check username and "
                    "password, and that the user may read")
        if name in CLIENT_CERT_REFUSED and security.mode != "None":
            return (f"{where}: the server refused floorlink's certificate "
                    f"{security.certificate} ({name}); add it to the server's trusted "
                    "certificates")
        return f"{where}: the server answered {name}"
    if isinstance(error, TimeoutError):
        return f"{where}: no answer within the timeout; check the address, port and firewall"
    if isinstance(error, ConnectionRefusedError):
        return f"{where}: connection refused; check the port and that the server runs"
    if isinstance(error, socket.gaierror):
        return f"{where}: unknown host ({error}); check the endpoint's host name"
    if isinstance(error, OSError):
        return f"{where}: {error.strerror or error}"
    text = str(error) or type(error).__name__
    if "No matching endpoints" in text or "no matching endpoint" in text.lower():
        return (f"{where}: the server offers no endpoint with security {security.mode} "
                f"{security.policy}; `floorlink browse {endpoint}` with --security-mode None "
                "lists what it offers")
    return f"{where}: {text}"


async def server_clock_offset(client: Any) -> float | None:
    """Seconds the server's clock is ahead of ours (negative: behind)."""
    from asyncua import ua

    before = time.time()
    try:
        now = await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_CurrentTime)
                                    ).read_value()
    except Exception as exc:
        log.debug("server time not readable: %s", exc)
        return None
    after = time.time()
    return float(now.timestamp() - (before + after) / 2)
