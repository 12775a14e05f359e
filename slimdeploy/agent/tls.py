"""TLS for the agent and its client (stdlib `ssl` only): contexts, and when plain HTTP deserves a warning."""
from __future__ import annotations

import ipaddress
import os
import ssl

from slimdeploy.errors import SlimdeployError

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server context (TLS 1.2 or newer) holding the agent's certificate chain and key."""
    for option, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        if not os.path.isfile(path):
            raise SlimdeployError(f"{option} {path}: no such file; give the PEM file of the agent's "
                                  f"{'certificate' if option == '--tls-cert' else 'private key'}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise SlimdeployError(f"cannot use --tls-cert {cert_file} with --tls-key {key_file}: "
                              f"{getattr(exc, 'reason', None) or exc}; give a PEM certificate and its private "
                              f"key (unencrypted)") from None
    return context


def client_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A client context that verifies the agent's certificate and host name, against the system's
    CAs or, for a self-signed agent, against `ca_file` (a PEM file, e.g. the agent's certificate)."""
    if ca_file is not None and not os.path.isfile(ca_file):
        raise SlimdeployError(f"remote option ca_file {ca_file}: no such file; give the PEM certificate the "
                              f"agent was started with (--tls-cert) or the CA that signed it")
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise SlimdeployError(f"cannot read remote option ca_file {ca_file}: {getattr(exc, 'reason', None) or exc}; "
                              f"give a PEM certificate") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or name the agent listens on) is reachable only from this machine."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def plain_http_warning(host: str, tls: bool) -> str | None:
    """The warning for an agent that listens beyond loopback without TLS, else None."""
    if tls or is_loopback(host):
        return None
    return (f"slimdeploy agent: warning: listening on {host} over plain HTTP; the token and the models travel "
            f"unencrypted: start it with --tls-cert/--tls-key (clients then use remote:https://...), or keep it on "
            f"127.0.0.1 behind an SSH tunnel")
