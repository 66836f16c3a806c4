"""DICOM over TLS on the node's listening port (PS3.15 B.1, the BCP 195 TLS profiles).

``server_context`` builds the :class:`ssl.SSLContext` of the SCP from ``dicom.tls_*``: TLS 1.2
or 1.3 only, AEAD cipher suites with forward secrecy (RFC 9325), this node's certificate, and
client certificates verified against ``dicom.tls_ca_file`` (required when
``dicom.tls_require_client_certificate``). A file that cannot be used is a
:class:`~mammogate.config.ConfigError` naming the setting, raised before the port opens.

``handshake`` runs the server side of the handshake of one accepted connection, within a
deadline, in that connection's thread (never in the accepting loop, which a silent client would
otherwise hold), and explains a failure in words.
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path
from typing import Any

from mammogate.config import ConfigError
from mammogate.config.settings import DicomSettings

log = logging.getLogger(__name__)

# RFC 9325 (BCP 195) 4.2, for TLS 1.2: AEAD suites with ECDHE key exchange (TLS 1.3 has only AEAD)
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


class TlsHandshakeError(Exception):
    """The TLS handshake of a connection failed; the message says why, in words."""


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    # OpenSSL would otherwise prompt on the terminal for an encrypted key
    raise _EncryptedKey


def _pem(path: str, key: str, marker: str, what: str) -> None:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"dicom.{key}: cannot read {path!r}: {exc.strerror or exc}") from exc
    if marker.encode() not in text:
        raise ConfigError(f"dicom.{key}: {path!r} holds no PEM {what} ({marker!r} missing)")


def server_context(dicom: DicomSettings) -> ssl.SSLContext | None:
    """The SCP's TLS context, or None when ``dicom.tls`` is false."""
    if not dicom.tls:
        return None
    _pem(dicom.tls_cert_file, "tls_cert_file", "-----BEGIN CERTIFICATE-----", "certificate")
    _pem(dicom.tls_key_file, "tls_key_file", "PRIVATE KEY-----", "private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(dicom.tls_cert_file, dicom.tls_key_file, password=_no_password)
    except _EncryptedKey as exc:
        raise ConfigError(
            f"dicom.tls_key_file: {dicom.tls_key_file!r} is encrypted; give the key unencrypted, "
            "in a file only the node's user can read"
        ) from exc
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"dicom.tls_key_file: {dicom.tls_key_file!r} is not the private key of the "
                f"certificate in dicom.tls_cert_file ({dicom.tls_cert_file!r})"
            ) from exc
        raise ConfigError(
            f"dicom.tls_cert_file / dicom.tls_key_file: cannot load {dicom.tls_cert_file!r} "
            f"with {dicom.tls_key_file!r}: {exc.reason or exc}"
        ) from exc
    if dicom.tls_ca_file:
        _pem(dicom.tls_ca_file, "tls_ca_file", "-----BEGIN CERTIFICATE-----", "certificate")
        try:
            context.load_verify_locations(cafile=dicom.tls_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"dicom.tls_ca_file: cannot load {dicom.tls_ca_file!r}: {exc.reason or exc}"
            ) from exc
        context.verify_mode = (
            ssl.CERT_REQUIRED if dicom.tls_require_client_certificate else ssl.CERT_OPTIONAL
        )
    else:  # no CA to verify against: a client certificate is not asked for
        context.verify_mode = ssl.CERT_NONE
    return context


def describe(dicom: DicomSettings) -> str:
    """How the port is secured, for the start-up log line."""
    if not dicom.tls:
        return "plain TCP, no TLS"
    if dicom.tls_require_client_certificate:
        return "TLS, client certificates required"
    if dicom.tls_ca_file:
        return "TLS, client certificates verified when presented"
    return "TLS, client certificates not asked for"


def _reason(exc: BaseException, dicom: DicomSettings) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return (f"no TLS handshake within dicom.association_request_seconds "
                f"({dicom.association_request_seconds:g} s)")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the client's certificate fails verification against dicom.tls_ca_file: "
                f"{exc.verify_message}")
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ConnectionError):
        return "the client closed the connection during the handshake (does it trust this node's certificate?)"
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        explained = {
            "WRONG_VERSION_NUMBER": "not a TLS client hello (plain DICOM to the TLS port?)",
            "HTTP_REQUEST": "an HTTP request, not a TLS client hello",
            "PACKET_LENGTH_TOO_LONG": "not a TLS client hello (plain DICOM to the TLS port?)",
            "RECORD_LAYER_FAILURE": "not a TLS client hello (plain DICOM to the TLS port?)",
            "PEER_DID_NOT_RETURN_A_CERTIFICATE":
                "the client sent no certificate and dicom.tls_require_client_certificate is true",
            "UNSUPPORTED_PROTOCOL": "the client offers only TLS versions below 1.2",
            "NO_SHARED_CIPHER": "no cipher suite in common (this node takes BCP 195's AEAD suites)",
            "NO_SUITABLE_SIGNATURE_ALGORITHM": "no signature algorithm in common",
            "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust this node's certificate (unknown CA)",
            "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected this node's certificate",
            "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client rejected this node's certificate",
        }.get(reason)
        return f"{explained} [{reason}]" if explained else reason
    return f"{type(exc).__name__}: {exc}"


def handshake(raw: socket.socket, context: ssl.SSLContext, dicom: DicomSettings) -> ssl.SSLSocket:
    """Wrap an accepted connection and complete the server side of the TLS handshake within
    ``dicom.association_request_seconds`` (one deadline for the whole handshake).

    Raises :class:`TlsHandshakeError` (the raw socket closed) when it fails."""
    try:
        raw.settimeout(dicom.association_request_seconds)
        wrapped = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as exc:  # the client is gone already
        raw.close()
        raise TlsHandshakeError(_reason(exc, dicom)) from exc
    try:
        wrapped.do_handshake()  # CPython applies the timeout to the handshake as a whole
        wrapped.settimeout(None)  # blocking as a plain accepted socket: the guard sets deadlines
    except (OSError, ValueError) as exc:
        try:
            wrapped.close()
        except OSError:
            log.debug("closing the failed TLS connection failed too")
        raise TlsHandshakeError(_reason(exc, dicom)) from exc
    return wrapped


def peer_summary(wrapped: ssl.SSLSocket) -> str:
    """The protocol and cipher, and the client certificate's subject if one was verified."""
    try:
        version = wrapped.version() or "TLS"
        cipher = (wrapped.cipher() or ("?",))[0]
        cert = wrapped.getpeercert()
    except (OSError, ValueError):  # closed meanwhile: the association reports that
        return "connection closed"
    if not cert:
        return f"{version} {cipher}, no client certificate"
    rdns: Any = cert.get("subject", ())  # ((("commonName", "client"),), ...)
    subject = ", ".join(f"{k}={v}" for rdn in rdns for k, v in rdn)
    return f"{version} {cipher}, client certificate {subject or '(no subject)'}"
