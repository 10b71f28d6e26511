"""TLS for uplinks: one way to build the client context, one way to explain a failure.

Verification (chain and host name) is on by default. `insecure: true` turns it
off entirely; the agent then warns at every start, because an edge box that
accepts any certificate hands production data to whoever answers.
"""

from __future__ import annotations

import socket
import ssl

from ..settings.base import TlsSettings


def client_context(tls: TlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(tls.ca_file) if tls.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def explain(error: BaseException, host: str, tls: TlsSettings) -> str:
    """What went wrong in a handshake, and what to change."""
    text = str(error)
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = error.verify_message or text
        if "Hostname mismatch" in text or "IP address mismatch" in text:
            return (f"TLS: the server's certificate is not valid for '{host}' ({reason}); "
                    "connect by a name the certificate lists, or reissue the certificate")
        if "expired" in reason:
            return f"TLS: the server's certificate has expired ({reason}); renew it"
        ca = tls.ca_file or "the system's CA store"
        return (f"TLS: the server's certificate is not trusted ({reason}); tls.ca_file "
                f"({ca}) must be the CA that signed it")
    if isinstance(error, ssl.SSLError):
        if "CERTIFICATE_REQUIRED" in text or "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text:
            if tls.cert_file is None:
                return (f"TLS: the server requires a client certificate ({text}); set "
                        "tls.cert_file and tls.key_file")
            return (f"TLS: the server did not accept the client certificate as given ({text}); "
                    "check tls.cert_file and tls.key_file")
        if any(alert in text for alert in ("UNKNOWN_CA", "BAD_CERTIFICATE",
                                           "CERTIFICATE_UNKNOWN", "DECRYPT_ERROR")):
            return (f"TLS: the server refused the client certificate {tls.cert_file} ({text}); "
                    "it must be signed by a CA the server trusts, and not be expired")
        return f"TLS handshake failed: {text}; check the port speaks TLS and the client certificate"
    return f"TLS: {text}"


def handshake_error(host: str, port: int, context: ssl.SSLContext,
                    timeout: float = 5.0, linger: float = 1.0) -> BaseException | None:
    """Try a bare handshake (blocking): None if it succeeds, else the error.
    Used only to say *why* a TLS connection failed; the client library keeps retrying.

    Under TLS 1.3 the client's side of the handshake is over before the server has
    checked the client's certificate: a refusal comes as an alert on the first read. So
    after the handshake this waits up to `linger` for one (a server that waits for the
    client to speak first, as a broker does, sends nothing)."""
    try:
        with socket.create_connection((host, port), timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            tls.settimeout(linger)
            try:
                if tls.recv(1) == b"":
                    return ConnectionResetError(
                        "the server closed the connection right after the TLS handshake")
            except TimeoutError:
                pass
            return None
    except (OSError, ssl.SSLError) as exc:
        return exc


def ssl_cause(error: BaseException) -> ssl.SSLError | None:
    """httpx wraps the ssl module's error; find it to say what to change."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
