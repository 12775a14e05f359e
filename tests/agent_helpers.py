"""What the agent tests share: the token, small ONNX models, and a `slimdeploy agent` subprocess."""
from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TOKEN = "test-token-5f0c2a9e7b1d4c38"
SHAPE = (1, 3, 32, 32)
QUICK = {"max_seconds": 1, "warmup_s": 0.1, "threads": 1}


# ----------------------------------------------------------------------------- models


def _conv_model(widths: list[int], seed: int = 0) -> bytes:
    """A chain of 3x3 conv + relu on a 1x3x32x32 input, widths[i] output channels each."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev, channels = [], [], "x", 3
    for i, width in enumerate(widths):
        w = rng.standard_normal((width, channels, 3, 3)).astype(np.float32) * 0.1
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, channels = f"r{i}", width
    graph = helper.make_graph(
        nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, channels, SHAPE[2], SHAPE[3]])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


SMALL = _conv_model([4])
BIG = _conv_model([16, 16, 16])


def _unloadable_model() -> bytes:
    """Parses as an ONNX ModelProto but names an operator onnxruntime does not have."""
    node = helper.make_node("NoSuchOperator", ["x"], ["y"], domain="example.invalid")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("example.invalid", 1)])
    model.ir_version = 8
    return model.SerializeToString()


# ----------------------------------------------------------------------------- agents


class Agent:
    """A `slimdeploy agent` subprocess and a tiny HTTP client for it (`context`: TLS client settings)."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None,
                 context: ssl.SSLContext | None = None, preexec_fn=None):
        full_env = {**os.environ, "SLIMDEPLOY_AGENT_TOKEN": TOKEN, **(env or {})}
        self.context = context
        self.stderr = open(tmp / "agent.stderr", "w+")
        self.proc = subprocess.Popen([sys.executable, "-m", "slimdeploy", "agent", "--port", "0", *args],
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=full_env,
                                     preexec_fn=preexec_fn)
        line = self.proc.stdout.readline()
        if not line.startswith(("slimdeploy agent listening on http://", "slimdeploy agent listening on https://")):
            self.stop()
            self.stderr.seek(0)
            raise RuntimeError(f"agent did not start: {line!r} {self.stderr.read()}")
        self.url = line.split()[-1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def request(self, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
                timeout: float = 30, **query) -> tuple[int, dict, dict]:
        """(status, headers, JSON body) of one request."""
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.context) as resp:
                return resp.status, dict(resp.headers), json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())

    def measure(self, body: bytes, token: str | None = TOKEN, **query):
        return self.request("POST", "/v1/measure", body, token=token, **query)

    def health(self) -> dict:
        status, _, payload = self.request("GET", "/v1/health", token=None, timeout=5)
        assert status == 200
        return payload

    def raw(self, data: bytes, read_timeout: float = 5.0) -> bytes:
        """Send `data` on a fresh connection (not closing it) and read the reply until EOF."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=read_timeout) as sock:
            sock.sendall(data)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        return reply

    def log(self) -> str:
        """What the agent wrote on stderr so far."""
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()
