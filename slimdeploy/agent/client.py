"""The ``remote`` runtime: measure ONNX models on a device running ``slimdeploy agent``.

``--runtime remote:http://HOST:PORT`` or ``remote:https://HOST:PORT`` (an agent started with
``--tls-cert``; its certificate is verified, against ``--runtime-option ca_file=PEM`` for a
self-signed one). The token comes from ``$SLIMDEPLOY_AGENT_TOKEN``, or the ``token`` /
``token_file`` options. Each measurement uploads the model's bytes to the agent, which times
it with its onnxruntime and answers a `Measurement`. `compare` interleaves short measurements
of each model in rotating order and quotes the median of the per-round ratios, like the local
protocol. Requests go through `transport` (http.client, ``Expect: 100-continue``, so a refusal
arrives before the upload); proxies and redirects are never followed (the token must go to the
agent and nowhere else). The token, timeout and CA file are kept out of `options`, which are
recorded with every figure.

Device and fingerprint: `device` asks the agent (``GET /v1/device``, once per runtime) for its
CPU, runtime version, provider, threads and optimization; the result has ``runtime="remote"``,
``remote_runtime`` (what the agent measures with) and ``remote_device``, a fingerprint of the
agent's own description. The fingerprint therefore stays the same for the same device and
settings whatever address the agent is reached at.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import ssl
import time
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlencode, urlsplit

from slimdeploy.errors import SlimdeployError
from slimdeploy.runtimes.base import Runtime, device_fingerprint

from . import transport
from .tls import client_context

TOKEN_ENV = "SLIMDEPLOY_AGENT_TOKEN"
BUSY_RETRIES = 5          # answers of 429 tolerated per measurement before giving up
MAX_RETRY_WAIT = 30.0     # seconds; a longer Retry-After is shortened to this
PROTOCOL_KEYS = ("warmup", "warmup_s", "round_s", "min_round_runs", "min_runs", "max_runs", "max_seconds",
                 "window", "settle", "rtol", "target_cv", "max_round_cv")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "layout", "all")


def _check_url(value: Any) -> str:
    url = str(value or "").strip().rstrip("/")
    parts = urlsplit(url)
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        raise SlimdeployError(f"remote runtime url must look like http://HOST:PORT or https://HOST:PORT (the "
                              f"agent's address), got {value!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise SlimdeployError(f"remote runtime url {value!r} must not carry credentials, a query or a fragment; "
                              f"pass the token with {TOKEN_ENV} or the token_file option")
    return url


def _positive(name: str, value: Any, kind: type) -> Any:
    try:
        number = kind(str(value).strip())
    except ValueError:
        number = None
    if number is None or isinstance(value, bool) or not number > 0 or not math.isfinite(number):
        raise SlimdeployError(f"remote option {name} must be a positive {'integer' if kind is int else 'number'}, "
                              f"got {value!r}")
    return number


def _read_token(options: dict[str, Any]) -> str:
    if options.get("token"):
        return str(options["token"]).strip()
    if options.get("token_file"):
        path = Path(str(options["token_file"]))
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SlimdeployError(f"cannot read the agent token file {path}: {exc}") from None
        if not token:
            raise SlimdeployError(f"the agent token file {path} is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise SlimdeployError(f"the remote runtime needs the agent's token: set {TOKEN_ENV}, or pass "
                              f"--runtime-option token_file=PATH")
    return token


def _artifact_bytes(artifact: Any) -> bytes:
    if hasattr(artifact, "SerializeToString"):
        return artifact.SerializeToString()
    if isinstance(artifact, (bytes, bytearray, memoryview)):
        return bytes(artifact)
    if isinstance(artifact, (str, os.PathLike)):
        try:
            return Path(artifact).read_bytes()
        except OSError as exc:
            raise SlimdeployError(f"cannot read the model {artifact}: {exc.strerror or exc}") from None
    raise SlimdeployError(f"the remote runtime sends ONNX models: expected a path, bytes or an onnx.ModelProto, "
                          f"got {type(artifact).__name__}")


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _iqr(values: Sequence[float]) -> float:
    import numpy as np

    q1, q3 = np.percentile(np.asarray(values, dtype=float), [25, 75])
    return float(q3 - q1)


class RemoteRuntime(Runtime):
    """ONNX models measured by a ``slimdeploy agent`` on another device, over HTTP."""

    name = "remote"
    artifact_suffix = ".onnx"
    option_help = {
        "url": "the agent's address, http://HOST:PORT or https://HOST:PORT (required; remote:URL sets it)",
        "token": f"the agent's token (default ${TOKEN_ENV}); never recorded",
        "token_file": "file holding the agent's token",
        "threads": "intra-op threads on the device (default: the agent's --threads, else all its cores)",
        "optimization": f"graph optimization level on the device: {', '.join(OPTIMIZATION_LEVELS)} (default all)",
        "provider": "execution provider on the device (default CPUExecutionProvider)",
        "seed": "seed of the fixed random input (default 0)",
        "timeout": "seconds to wait for one answer, time queued at the agent included (default 600)",
        "ca_file": "PEM file to verify an https:// agent's certificate with (its own, if self-signed; default: "
                   "the system's CAs)",
    }

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if not options.get("url"):
            raise SlimdeployError("the remote runtime needs the agent's address: --runtime remote:http://HOST:PORT "
                                  "(or remote:https://HOST:PORT)")
        parsed: dict[str, Any] = {"url": _check_url(options["url"])}
        self._split = urlsplit(parsed["url"])
        ca_file = str(options["ca_file"]).strip() if options.get("ca_file") else None
        if ca_file and self._split.scheme != "https":
            raise SlimdeployError(f"remote option ca_file is for https:// agents; {parsed['url']} is plain HTTP")
        self._tls = client_context(ca_file) if self._split.scheme == "https" else None
        optimization = str(options.get("optimization", "all")).strip().lower()
        if optimization not in OPTIMIZATION_LEVELS:
            raise SlimdeployError(f"remote option optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
                                  f"got {options['optimization']!r}")
        parsed["optimization"] = optimization
        if options.get("threads") is not None:
            parsed["threads"] = _positive("threads", options["threads"], int)
        if options.get("provider"):
            parsed["provider"] = str(options["provider"]).strip()
        if options.get("seed") is not None:
            try:
                parsed["seed"] = int(str(options["seed"]).strip())
            except ValueError:
                raise SlimdeployError(f"remote option seed must be an integer, got {options['seed']!r}") from None
        # Secrets and transport settings live outside `options`, which are recorded with figures.
        self._token = _read_token(options)
        self._timeout = _positive("timeout", options.get("timeout", 600), float)
        self._agent_device: dict[str, Any] | None = None
        return parsed

    @property
    def url(self) -> str:
        return self.options["url"]

    # -- HTTP

    def _runtime_query(self) -> dict[str, Any]:
        return {k: self.options[k] for k in ("threads", "optimization", "provider") if k in self.options}

    def _call(self, method: str, path: str, query: dict[str, Any], body: bytes | None = None):
        """(status, headers, JSON payload) of one request; connection problems raise `SlimdeployError`."""
        target = self._split.path + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/octet-stream"
        port = self._split.port or (443 if self._tls else 80)
        conn = transport.connection(self._split.scheme, self._split.hostname, port, self._timeout, self._tls)
        try:
            response = transport.send(conn, method, target, headers, body)
            status, reply_headers, raw = response.status, response.headers, response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise self._connection_error(exc, None if body is None else len(body)) from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw.decode("utf-8")) if raw else {}
        except (UnicodeDecodeError, ValueError):
            payload = {"error": raw[:200].decode("utf-8", "replace")}
        return status, reply_headers, payload

    def _connection_error(self, exc: Exception, sent: int | None = None) -> SlimdeployError:
        reason = exc
        plain = self._tls is None
        if isinstance(reason, ssl.SSLCertVerificationError):
            return SlimdeployError(f"the certificate of the slimdeploy agent at {self.url} could not be verified "
                                   f"({reason.verify_message or reason}); for a self-signed agent pass its "
                                   f"certificate with --runtime-option ca_file=PEM")
        if isinstance(reason, ssl.SSLError):
            return SlimdeployError(f"TLS with the slimdeploy agent at {self.url} failed ({reason.reason or reason}); "
                                   f"is it started with --tls-cert? A plain agent is reached with http://")
        if isinstance(reason, ConnectionRefusedError):
            return SlimdeployError(f"cannot reach the slimdeploy agent at {self.url}: connection refused; is "
                                   f"`slimdeploy agent` running there, on that port?")
        if isinstance(reason, TimeoutError):
            return SlimdeployError(f"no answer from the slimdeploy agent at {self.url} within {self._timeout:g} s; "
                                   f"raise the remote option timeout or check the agent")
        hint = " (an agent started with --tls-cert is reached with https://)" if plain else ""
        if isinstance(reason, (ConnectionResetError, BrokenPipeError)):
            size = f" of {sent} bytes" if sent is not None else ""
            return SlimdeployError(f"the slimdeploy agent at {self.url} closed the connection while the request{size} "
                                   f"was sent ({reason}){hint}")
        if isinstance(reason, http.client.RemoteDisconnected):
            return SlimdeployError(f"the slimdeploy agent at {self.url} closed the connection without an "
                                   f"answer{hint}")
        return SlimdeployError(f"cannot talk to the slimdeploy agent at {self.url}: {reason}{hint}")

    def _refusal(self, status: int, payload: Any) -> SlimdeployError:
        message = payload.get("error") if isinstance(payload, dict) else None
        message = message or f"HTTP {status}"
        if status == 401:
            return SlimdeployError(f"the agent at {self.url} refused the token (HTTP 401: {message}); pass the "
                                   f"agent's token with ${TOKEN_ENV} or the token/token_file options")
        if status == 413:
            return SlimdeployError(f"the agent at {self.url} refused the model as too large (HTTP 413): {message}")
        if status == 429:
            return SlimdeployError(f"the agent at {self.url} stayed busy after {BUSY_RETRIES} tries (HTTP 429): "
                                   f"{message}; try later, or start the agent with a larger --queue")
        if status == 504:
            return SlimdeployError(f"the agent at {self.url} stopped the measurement (HTTP 504): {message}")
        if 400 <= status < 500:
            return SlimdeployError(f"the agent at {self.url} rejected the request (HTTP {status}): {message}")
        return SlimdeployError(f"the agent at {self.url} failed (HTTP {status}): {message}")

    def _measure_bytes(self, body: bytes, query: dict[str, Any]):
        from slimdeploy.latency.measure import Measurement

        self.device()  # once per runtime: a wrong token or address is told before any upload
        for attempt in range(BUSY_RETRIES):
            status, headers, payload = self._call("POST", "/v1/measure", query, body)
            if status != 429 or attempt == BUSY_RETRIES - 1:
                break
            try:
                wait = float(headers.get("Retry-After", "1"))
            except (TypeError, ValueError):
                wait = 1.0
            time.sleep(min(max(wait, 0.1), MAX_RETRY_WAIT))
        if status != 200:
            raise self._refusal(status, payload)
        try:
            return Measurement.from_dict(payload)
        except (TypeError, KeyError, AttributeError) as exc:
            raise SlimdeployError(f"the agent at {self.url} answered a malformed measurement ({exc})") from None

    def _query(self, input_shape: Sequence[int] | None, protocol: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(protocol) - set(PROTOCOL_KEYS))
        if unknown:
            raise SlimdeployError(f"the remote runtime does not take {', '.join(unknown)}; protocol settings: "
                                  f"{', '.join(PROTOCOL_KEYS)} (runtime settings are runtime options)")
        query = self._runtime_query()
        if "seed" in self.options:
            query["seed"] = self.options["seed"]
        if input_shape is not None:
            query["input_shape"] = ",".join(str(int(d)) for d in input_shape)
        query.update({k: v for k, v in protocol.items() if v is not None})
        return query

    # -- the Runtime interface

    def timer(self, artifact: Any, input_shape: Sequence[int] | None = None) -> Any:
        raise SlimdeployError("the remote runtime measures on the agent's device and has no local timer; "
                              "use its measure() or compare()")

    def device(self, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
        """The agent's device description (fetched once), marked as remote; see the module docstring."""
        if self._agent_device is None:
            status, _, payload = self._call("GET", "/v1/device", self._runtime_query())
            if status != 200 or not isinstance(payload, dict):
                raise self._refusal(status, payload)
            self._agent_device = payload
        agent = self._agent_device
        info = {k: v for k, v in agent.items() if k != "runtime"}
        info.update({"runtime": "remote", "remote_runtime": agent.get("runtime"),
                     "remote_device": device_fingerprint(agent), "url": self.url})
        if input_shape is not None:
            info["input_shape"] = [int(d) for d in input_shape]
            info["batch"] = int(input_shape[0]) if len(input_shape) else 1
        return info

    def measure(self, artifact: Any, input_shape: Sequence[int] | None = None, **protocol: Any):
        """One `Measurement` taken by the agent; `protocol` as `slimdeploy.latency.measure.measure`."""
        return self._measure_bytes(_artifact_bytes(artifact), self._query(input_shape, protocol))

    def compare(self, artifacts: Sequence[Any], input_shape: Sequence[int] | None = None, *, rounds: int = 10,
                max_rounds: int = 60, max_seconds: float = 120.0, settle: int = 2, rtol: float = 0.01,
                target_cv: float = 0.1, max_round_cv: float = 0.3, request_seconds: float = 0.5,
                **protocol: Any):
        """Interleaved comparison; ratios against ``artifacts[0]``.

        Each round measures every model once (about `request_seconds` each) in an order that
        rotates per round; a round's ratios are its medians over the first model's. The quoted
        ratio is the median over rounds. A round where some model's cv exceeds `max_round_cv` is
        set aside. Rounds continue until `rounds` are accepted and the ratios moved less than
        `rtol` over `settle` rounds with spread at most `target_cv` (``stable=True``), or until
        `max_rounds` or `max_seconds` (at least two rounds are always taken). Each model's
        `Measurement` holds the median of its round medians and the median of their IQRs.
        """
        from slimdeploy.latency.measure import Comparison

        if len(artifacts) < 2:
            raise SlimdeployError(f"compare needs at least two models, got {len(artifacts)}")
        bodies = [_artifact_bytes(a) for a in artifacts]
        query = self._query(input_shape, {"warmup_s": 0.1, "min_runs": 10, **protocol, "max_seconds": request_seconds})
        n, start, k = len(bodies), time.monotonic(), 0
        accepted: list[list[Any]] = []
        noisy: list[list[Any]] = []
        history: list[list[float]] = []
        stable = False
        while True:
            got: list[Any] = [None] * n
            for i in [(k + j) % n for j in range(n)]:
                got[i] = self._measure_bytes(bodies[i], query)
            k += 1
            if any(m.cv > max_round_cv for m in got):
                noisy.append(got)
            else:
                accepted.append(got)
                history.append([_median([r[i].median_ms / r[0].median_ms for r in accepted]) for i in range(n)])
                if len(accepted) >= max(rounds, settle + 1) and self._settled(accepted, history, settle, rtol,
                                                                              target_cv):
                    stable = True
                    break
            taken = len(accepted) + len(noisy)
            if len(accepted) >= max_rounds or taken >= 2 * max_rounds or (
                    time.monotonic() - start >= max_seconds and taken >= 2):
                break
        used = accepted if len(accepted) >= rounds else accepted + noisy
        seconds = time.monotonic() - start
        ratios = [[r[i].median_ms / r[0].median_ms for i in range(n)] for r in used]
        return Comparison(
            measurements=[self._pooled([r[i] for r in used], len(noisy), seconds, stable, target_cv)
                          for i in range(n)],
            ratios=[_median([r[i] for r in ratios]) for i in range(n)],
            ratio_iqr=[_iqr([r[i] for r in ratios]) for i in range(n)],
            rounds=len(used), stable=stable, rejected_rounds=len(noisy), seconds=seconds,
            background_cores=self._background([m for r in used for m in r]),
            round_ratios=ratios,
        )

    @staticmethod
    def _settled(accepted, history, settle, rtol, target_cv) -> bool:
        n = len(history[-1])
        for i in range(1, n):
            last = history[-1][i]
            moved = max(abs(last - h[i]) / last for h in history[-1 - settle:-1])
            per_round = [r[i].median_ms / r[0].median_ms for r in accepted]
            if moved >= rtol or _iqr(per_round) / _median(per_round) > target_cv:
                return False
        return True

    @staticmethod
    def _background(measurements) -> float | None:
        loads = [m.background_cores for m in measurements if m.background_cores is not None]
        return _median(loads) if loads else None

    def _pooled(self, parts, rejected: int, seconds: float, stable: bool, target_cv: float):
        from slimdeploy.latency.measure import Measurement

        first = parts[0]
        median_ms = _median([m.median_ms for m in parts])
        iqr_ms = _median([m.iqr_ms for m in parts])
        cv = iqr_ms / median_ms if median_ms > 0 else float("inf")
        return Measurement(
            median_ms=median_ms, iqr_ms=iqr_ms, cv=cv, runs=sum(m.runs for m in parts), rounds=len(parts),
            threads=first.threads, batch=first.batch, input_shape=first.input_shape, device=first.device,
            stable=stable and cv <= target_cv, mean_ms=sum(m.mean_ms for m in parts) / len(parts),
            min_ms=min(m.min_ms for m in parts), rejected_rounds=rejected,
            warmup_runs=sum(m.warmup_runs for m in parts), seconds=seconds,
            background_cores=self._background(parts), round_medians_ms=[m.median_ms for m in parts],
        )
