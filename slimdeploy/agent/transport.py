"""One HTTP(S) request to the agent with http.client, the body held back behind ``Expect: 100-continue``.

urllib sends a request's whole body before it reads anything, so a server that refuses early
(wrong token, bad query, too large) reaches it as a broken pipe. Here a request with a body
announces ``Expect: 100-continue`` and waits: on ``100 Continue`` (or silence for `wait`
seconds, from a server that ignores the header) the body follows; on any other status the body
is never sent and that reply is returned. No proxies, no redirects: the token goes to the agent
and nowhere else.
"""
from __future__ import annotations

import http.client
import io
import select
import ssl
from typing import Mapping

MAX_STATUS_LINE = 1024


class _Replayed(io.RawIOBase):
    """A socket's stream with bytes already taken from it put back in front."""

    def __init__(self, prefix: bytes, sock) -> None:
        self._prefix, self._sock = prefix, sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._sock.recv_into(buffer)


class _ReplaySocket:
    """What `http.client.HTTPResponse` needs of a socket: ``makefile``, over `_Replayed`."""

    def __init__(self, prefix: bytes, sock) -> None:
        self._prefix, self._sock = prefix, sock

    def makefile(self, mode: str, *args, **kwargs):
        return io.BufferedReader(_Replayed(self._prefix, self._sock))


def _readable(sock, wait: float) -> bool:
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    return bool(select.select([sock], [], [], wait)[0])


def _read_line(sock) -> bytes:
    """One CRLF-terminated line, byte by byte (nothing beyond it is taken from the socket)."""
    line = b""
    while not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        line += byte
        if len(line) > MAX_STATUS_LINE:
            raise http.client.LineTooLong("status line")
    return line


def connection(scheme: str, host: str, port: int | None, timeout: float,
               context: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A connection to the agent (HTTPS with `context` when `scheme` is https)."""
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def send(conn: http.client.HTTPConnection, method: str, target: str, headers: Mapping[str, str],
         body: bytes | None = None, wait: float = 2.0) -> http.client.HTTPResponse:
    """The agent's response to one request; a body is sent only if the agent lets it (see above)."""
    if body is None:
        conn.request(method, target, headers=dict(headers))
        return conn.getresponse()
    conn.putrequest(method, target, skip_accept_encoding=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    sock = conn.sock
    if _readable(sock, wait):
        status_line = _read_line(sock)
        parts = status_line.split(None, 2)
        if len(parts) < 2 or parts[1] != b"100":  # a final answer before the body: read it, send nothing
            response = http.client.HTTPResponse(_ReplaySocket(status_line, sock), method=method)
            response.begin()
            return response
        while _read_line(sock) not in (b"\r\n", b"\n", b""):  # the interim reply's (empty) headers
            pass
    conn.send(body)
    return conn.getresponse()
