"""`slimdeploy agent`: an HTTP service that measures ONNX models on the device it runs on.

API (every reply is JSON; every error reply is ``{"error": "..."}``):

* ``GET /v1/health`` - no token; ``{"status", "service", "version", "busy"}`` and nothing else.
* ``GET /v1/device`` - token; the device and runtime facts a figure would be recorded with
  (query: threads, optimization, provider). The ``remote`` runtime builds its fingerprint on it.
* ``POST /v1/measure`` - token (``Authorization: Bearer TOKEN``), body: the ONNX model's bytes,
  query: runtime settings (threads, optimization, provider, seed, input_shape=1,3,224,224) and
  protocol settings of `slimdeploy.latency.measure.measure` (max_seconds, min_runs, ...).
  200: `Measurement.to_dict()` (median_ms, iqr_ms, cv, runs, device, ...).

Refusals: 401 missing/wrong token; 411 no Content-Length; 413 body over ``max_bytes`` (decided
from the header, before reading); 400 bad parameters or bytes that are not a loadable ONNX
model (with the reason); 429 with Retry-After when ``queue`` requests already wait; 504 when a
measurement outlives ``request_timeout`` or its CPU-time cap (its process is stopped); 507 when
the model needs more memory than the measuring process may have (``max_memory``).

Every refusal can be read by an ordinary client: a request that says ``Expect: 100-continue``
(the ``remote`` runtime does) gets its refusal before it sends the body, and ``100 Continue``
only once the token, the query and the size passed; a body sent regardless is read and
discarded (up to ``max_bytes``) before the connection closes, so a client still sending it does
not see a reset instead of the reply. With ``tls_cert``/``tls_key`` the agent speaks HTTPS only
(the handshake runs in the connection's own thread).

Measurements run one at a time, each in a fresh child process (``python -c``, fed the model on
stdin, answering one JSON line) under an address-space and a CPU-time cap (`limits`): a slow,
crashing or memory-hungry model cannot stall or take down the agent or its device. Nothing is
ever unpickled. This module must not import torch.
"""
from __future__ import annotations

import hmac
import json
import math
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping

from slimdeploy import __version__
from slimdeploy.errors import SlimdeployError

from . import limits
from .requests import (DEVICE_PARAMS, MEASURING_RUNTIME, BadRequest, check_onnx, measure_params, parse_query,
                       runtime_value)
from .tls import plain_http_warning, server_context
from .worker import WORKER_CODE

TOKEN_ENV = "SLIMDEPLOY_AGENT_TOKEN"
DEFAULT_PORT = 8757
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_QUEUE = 4
DEFAULT_REQUEST_TIMEOUT = 120.0
MAX_CONNECTIONS = 64          # open connections at once; more are answered 503 and closed
SOCKET_TIMEOUT = 60.0         # seconds a client may stall while sending
DRAIN_BYTES = 4 * 1024 * 1024  # a refused body of unknown or excessive size: at most this much is read ...
DRAIN_SECONDS = 2.0            # ... for at most this long before closing
MIN_MEMORY = 64 << 20          # a measuring process needs this much address space just to start

@dataclass(frozen=True)
class AgentConfig:
    """What `serve` needs; `check` raises `SlimdeployError` on values that cannot work."""

    token: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_bytes: int = DEFAULT_MAX_BYTES
    queue: int = DEFAULT_QUEUE
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    threads: int | None = None
    max_memory: int | None = field(default_factory=limits.default_max_memory)  # bytes of address space
    max_cpu_seconds: float | None = None  # None: request_timeout x the cores the agent may use
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def cpu_limit(self) -> float:
        """CPU seconds one measurement may use (by default never tighter than the wall-clock limit)."""
        if self.max_cpu_seconds is not None:
            return self.max_cpu_seconds
        from slimdeploy.latency.host import available_cores

        return self.request_timeout * available_cores()

    def check(self) -> None:
        if not self.token:
            raise SlimdeployError(f"the agent needs a token: pass --token-file PATH or set {TOKEN_ENV}")
        if not 0 <= self.port <= 65535:
            raise SlimdeployError(f"--port must be between 0 and 65535, got {self.port}")
        if self.max_bytes < 1:
            raise SlimdeployError(f"--max-bytes must be positive, got {self.max_bytes}")
        if self.queue < 0:
            raise SlimdeployError(f"--queue must be 0 or more, got {self.queue}")
        if not (self.request_timeout > 0 and math.isfinite(self.request_timeout)):
            raise SlimdeployError(f"--request-timeout must be a positive number of seconds, "
                                  f"got {self.request_timeout}")
        if self.threads is not None and self.threads < 1:
            raise SlimdeployError(f"--threads must be a positive integer, got {self.threads}")
        if self.max_memory is not None and self.max_memory < MIN_MEMORY:
            raise SlimdeployError(f"--max-memory must be at least {limits.size_text(MIN_MEMORY)} (a measuring "
                                  f"process needs that much to start), got {self.max_memory} bytes")
        hard = limits.address_space_hard_limit()
        if self.max_memory is not None and hard is not None and self.max_memory > hard:
            raise SlimdeployError(f"--max-memory {limits.size_text(self.max_memory)} is over this process's own "
                                  f"address-space limit of {limits.size_text(hard)} (ulimit -v); ask for less")
        if self.max_cpu_seconds is not None and not (self.max_cpu_seconds > 0 and math.isfinite(self.max_cpu_seconds)):
            raise SlimdeployError(f"--max-cpu-seconds must be a positive number of seconds, got {self.max_cpu_seconds}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise SlimdeployError("--tls-cert and --tls-key go together: give both (PEM files) or neither")


def load_token(token_file: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The shared token: the contents of `token_file` (stripped), else ``$SLIMDEPLOY_AGENT_TOKEN``."""
    environ = os.environ if environ is None else environ
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SlimdeployError(f"cannot read the token file {token_file}: {exc}") from None
        if not token:
            raise SlimdeployError(f"the token file {token_file} is empty; write a long random token into it")
        return token
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise SlimdeployError(f"the agent refuses to start without a token: pass --token-file PATH or set "
                              f"{TOKEN_ENV} (the searching host must use the same token)")
    return token


# ----------------------------------------------------------------------------- the server


class AgentServer(ThreadingHTTPServer):
    """The HTTP server plus the state shared by its request threads (queue, lock, running child)."""

    daemon_threads = True

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self._state = threading.Lock()
        self._pending = 0                        # admitted measure requests: running + waiting
        self.measure_lock = threading.Lock()     # one measurement at a time
        self._connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._child: subprocess.Popen | None = None
        self._last_seconds = 1.0
        self._device_cache: dict[tuple, dict[str, Any]] = {}
        self.tls = server_context(config.tls_cert, config.tls_key) if config.tls_cert else None
        self._workdir = tempfile.TemporaryDirectory(prefix="slimdeploy-agent-")
        try:
            super().__init__((config.host, config.port), AgentHandler)
        except BaseException:
            self._workdir.cleanup()
            raise

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    # -- connections

    def process_request(self, request, client_address) -> None:
        if not self._connections.acquire(blocking=False):
            if self.tls is None:  # before a handshake, a TLS client could not read the reply
                _send_raw(request, 503, {"error": "the agent has too many open connections; try again shortly"})
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def finish_request(self, request, client_address) -> None:
        """Handle one connection; with TLS, the handshake first (here, in the connection's thread)."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(SOCKET_TIMEOUT)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            print(f"slimdeploy agent: TLS handshake with {client_address[0]} failed: {exc} (a client must use "
                  f"https://)", file=sys.stderr)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()

    def handle_error(self, request, client_address) -> None:
        """A connection that failed (client gone, timed out) is logged in one line; bugs with a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            print(f"slimdeploy agent: connection from {client_address[0]} failed: {exc!r}", file=sys.stderr)
        else:
            super().handle_error(request, client_address)

    # -- queue

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def admit(self) -> bool:
        """Take a place for one measure request: running, or one of `queue` waiting."""
        with self._state:
            if self._pending >= 1 + self.config.queue:
                return False
            self._pending += 1
            return True

    def leave(self) -> None:
        with self._state:
            self._pending -= 1

    def retry_after(self) -> int:
        return max(1, math.ceil(min(self._last_seconds, self.config.request_timeout)))

    # -- measuring

    def device(self, runtime: dict[str, Any]) -> dict[str, Any]:
        """What a figure under `runtime` settings is recorded with (no input shape)."""
        key = tuple(sorted(runtime.items()))
        if key not in self._device_cache:
            from slimdeploy.runtimes import get_runtime

            self._device_cache[key] = get_runtime(MEASURING_RUNTIME, runtime).device()
        return dict(self._device_cache[key])

    def run_measurement(self, body: bytes, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Measure in a fresh child process, killed after ``request_timeout``; (HTTP status, reply)."""
        timeout = self.config.request_timeout
        start = time.monotonic()
        env = _worker_env()
        cpu = self.config.cpu_limit
        limit_args = limits.child_args(self.config.max_memory, cpu)
        proc = subprocess.Popen([sys.executable, "-c", WORKER_CODE, *limit_args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self._workdir.name, env=env)
        self._child = proc
        try:
            out, err = proc.communicate(json.dumps(params).encode() + b"\n" + body, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return 504, {"error": f"the measurement ran past the agent's request timeout of {timeout:g} s and was "
                                  f"stopped; ask for a smaller max_seconds, or start the agent with a larger "
                                  f"--request-timeout"}
        finally:
            self._child = None
            self._last_seconds = time.monotonic() - start
        stopped = limits.signal_refusal(proc.returncode, cpu)
        if stopped is not None:
            return stopped[0], {"error": stopped[1]}
        return _worker_reply(proc.returncode, out, err)

    def stop_child(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            child.kill()

    def server_close(self) -> None:
        self.stop_child()
        super().server_close()
        self._workdir.cleanup()


def _worker_env() -> dict[str, str]:
    """The agent's environment without the token, with this package importable from any cwd."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    env.setdefault("MALLOC_ARENA_MAX", "2")  # per-thread malloc arenas would eat the address-space cap
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _worker_reply(returncode: int, out: bytes, err: bytes) -> tuple[int, dict[str, Any]]:
    lines = out.decode("utf-8", "replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1])
        status = int(reply["status"])
    except (IndexError, ValueError, KeyError, TypeError):
        tail = (err.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1][:300]
        print(f"slimdeploy agent: measuring process failed (exit code {returncode}): {tail}", file=sys.stderr)
        return 500, {"error": f"the measuring process crashed (exit code {returncode}): {tail}"}
    if status == 200:
        return 200, reply["result"]
    return status, {"error": str(reply.get("error", "measuring failed"))}


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload).encode("utf-8")


def _send_raw(sock: socket.socket, status: int, payload: dict[str, Any]) -> None:
    body = _json_bytes(payload)
    head = (f"HTTP/1.0 {status} {BaseHTTPRequestHandler.responses.get(status, ('',))[0]}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    try:
        sock.sendall(head.encode("latin-1") + body)
    except OSError:
        pass


class AgentHandler(BaseHTTPRequestHandler):
    """One connection; every reply is JSON and closes the connection."""

    server: AgentServer
    server_version = "slimdeploy-agent"
    sys_version = ""
    protocol_version = "HTTP/1.1"  # so that http.server honours ``Expect: 100-continue``
    timeout = SOCKET_TIMEOUT
    expects_continue = False

    # -- replies

    def reply(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = _json_bytes(payload)
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def refuse(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        """Reply before the body was read, then read the body the client may still be sending and close.

        Closing on unread data would reset the connection, and a client still sending (urllib,
        http.client) would see that instead of the reply. A body whose declared size the agent
        accepts is read whole (a client that waits for ``100 Continue`` sends none and closes);
        one of unknown or excessive size at most `DRAIN_BYTES` for `DRAIN_SECONDS`.
        """
        self.reply(status, {"error": message}, headers)
        declared = self.declared_length()
        self.drain(declared if declared is not None else DRAIN_BYTES,
                   SOCKET_TIMEOUT if declared is not None else DRAIN_SECONDS)

    def drain(self, limit: int, seconds: float) -> None:
        """Read and drop up to `limit` bytes for up to `seconds`, after half-closing our side."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + seconds
            drained = 0
            while drained < limit and time.monotonic() < deadline:
                self.connection.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = self.rfile.read1(min(1 << 16, limit - drained))
                if not chunk:
                    break
                drained += len(chunk)
        except (OSError, ValueError):
            pass

    def handle_expect_100(self) -> bool:
        """Remember the client waits; ``100 Continue`` goes out only once the request is accepted."""
        self.expects_continue = True
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (bad request line, unsupported method) as JSON."""
        text = message or self.responses.get(code, ("error",))[0]
        if self.request_version == "HTTP/0.9":  # an unparsable request line: still answer with a status line
            self.request_version = "HTTP/1.0"
        try:
            self.reply(code, {"error": text})
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        sys.stderr.write(f"{stamp} {self.address_string()} {format % args}\n")

    # -- checks

    def authorized(self) -> bool:
        """True for ``Authorization: Bearer <the token>``; otherwise replies 401."""
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            message = "missing token: send the header 'Authorization: Bearer TOKEN'"
        elif scheme.lower() != "bearer" or not given.strip():
            message = "malformed Authorization header: expected 'Bearer TOKEN'"
        elif hmac.compare_digest(given.strip().encode("utf-8"), self.server.config.token.encode("utf-8")):
            return True
        else:
            message = "wrong token: use the token the agent was started with"
        self.refuse(401, message, {"WWW-Authenticate": 'Bearer realm="slimdeploy-agent"'})
        return False

    def declared_length(self) -> int | None:
        """The Content-Length if it is well formed and within ``max_bytes``, else None."""
        text = self.headers.get("Content-Length") if self.headers is not None else None
        if text is None or not re.fullmatch(r"\s*\d{1,20}\s*", text) or \
                "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return None
        length = int(text)
        return length if length <= self.server.config.max_bytes else None

    def content_length(self) -> int | None:
        """The declared body size, if acceptable; otherwise replies 400/411/413 and returns None."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.refuse(411, "chunked bodies are not accepted; send Content-Length")
            return None
        text = self.headers.get("Content-Length")
        if text is None:
            self.refuse(411, "missing Content-Length header")
            return None
        if not re.fullmatch(r"\s*\d{1,20}\s*", text):
            self.refuse(400, f"Content-Length must be a non-negative integer, got {text[:40]!r}")
            return None
        length, cap = int(text), self.server.config.max_bytes
        if length > cap:
            self.refuse(413, f"the model is {length} bytes, over this agent's limit of {cap} bytes "
                             f"(start the agent with a larger --max-bytes)")
            return None
        return length

    def read_body(self, length: int) -> bytes | None:
        """Exactly `length` bytes, or None after replying 400 when the client sends fewer."""
        if self.expects_continue:
            self.send_response_only(100)
            self.end_headers()
        chunks, got = [], 0
        while got < length:
            chunk = self.rfile.read(min(1 << 20, length - got))
            if not chunk:
                self.reply(400, {"error": f"the body ended after {got} of {length} bytes"})
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    # -- routes

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/v1/health":
            self.reply(200, {"status": "ok", "service": "slimdeploy-agent", "version": __version__,
                             "busy": self.server.busy})
        elif path == "/v1/device":
            if not self.authorized():
                return
            try:
                raw = parse_query(query, DEVICE_PARAMS)
                runtime = {} if self.server.config.threads is None else {"threads": self.server.config.threads}
                runtime.update({k: runtime_value(k, v) for k, v in raw.items()})
            except BadRequest as exc:
                self.reply(400, {"error": str(exc)})
                return
            self.reply(200, self.server.device(runtime))
        else:
            self.refuse(404, f"no such endpoint {path[:100]!r}; the agent serves GET /v1/health, "
                             f"GET /v1/device and POST /v1/measure")

    def do_POST(self) -> None:
        path, _, query = self.path.partition("?")
        if path != "/v1/measure":
            self.refuse(404 if path not in ("/v1/health", "/v1/device") else 405,
                        f"POST {path[:100]!r} is not served; measure with POST /v1/measure")
            return
        if not self.authorized():
            return
        length = self.content_length()
        if length is None:
            return
        try:
            params = measure_params(query, self.server.config)
        except BadRequest as exc:
            self.refuse(400, str(exc))
            return
        if not self.server.admit():
            self.refuse(429, f"the agent is busy: one measurement runs and {self.server.config.queue} wait; "
                             f"retry later", {"Retry-After": str(self.server.retry_after())})
            return
        try:
            self.measure(length, params)
        finally:
            self.server.leave()

    def measure(self, length: int, params: dict[str, Any]) -> None:
        body = self.read_body(length)
        if body is None:
            return
        problem = check_onnx(body)
        if problem:
            self.reply(400, {"error": problem})
            return
        with self.server.measure_lock:
            status, payload = self.server.run_measurement(body, params)
        self.reply(status, payload)


# ----------------------------------------------------------------------------- entry point


def serve(config: AgentConfig, ready=None) -> int:
    """Run the agent until interrupted (SIGINT/SIGTERM). `ready(server)` is called once listening."""
    config.check()
    from slimdeploy.runtimes import get_runtime

    try:
        get_runtime(MEASURING_RUNTIME)
    except SlimdeployError as exc:
        raise SlimdeployError(f"the agent measures with the {MEASURING_RUNTIME} runtime plugin, which ships with "
                              f"slimdeploy; reinstall slimdeploy (pip install -e . in a checkout): {exc}") from None
    try:
        server = AgentServer(config)
    except OSError as exc:
        raise SlimdeployError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    warning = plain_http_warning(config.host, server.tls is not None)
    if warning:
        print(warning, file=sys.stderr)
    if config.max_memory is not None and not limits.can_limit():
        print("slimdeploy agent: warning: this platform cannot cap a process's memory or CPU time; "
              "--max-memory and --max-cpu-seconds are not enforced", file=sys.stderr)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop) if threading.current_thread() is threading.main_thread() else None
    try:
        print(f"slimdeploy agent listening on {server.url}", flush=True)
        memory = "unlimited" if config.max_memory is None else limits.size_text(config.max_memory)
        print(f"slimdeploy agent: each measurement may use {memory} of address space, {config.cpu_limit:g} CPU "
              f"seconds and {config.request_timeout:g} s; models up to {limits.size_text(config.max_bytes)}",
              file=sys.stderr, flush=True)
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("slimdeploy agent: stopped", file=sys.stderr)
    finally:
        server.server_close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
