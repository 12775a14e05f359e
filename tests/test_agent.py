"""`slimdeploy agent` on loopback, and the `remote` runtime that talks to it.

The agents run as real subprocesses (`python -m slimdeploy agent --port 0`). The main one sees a
`torch` package that refuses to import (and leaves a marker file if anything tries), so every
successful measurement here also shows the agent works without torch.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent_helpers import BIG, QUICK, SHAPE, SMALL, TOKEN, Agent, _unloadable_model
from slimdeploy.errors import SlimdeployError
from slimdeploy.latency.measure import Comparison, Measurement
from slimdeploy.runtimes import get_runtime


@pytest.fixture(scope="module")
def blocked_torch(tmp_path_factory) -> tuple[Path, Path]:
    """(PYTHONPATH dir with a `torch` that refuses to import, marker file it writes if tried)."""
    root = tmp_path_factory.mktemp("no_torch")
    marker = root / "torch-was-imported"
    (root / "torch").mkdir()
    (root / "torch" / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
        "raise ImportError('torch is not installed on this device (test stub)')\n")
    return root, marker


@pytest.fixture(scope="module")
def agent(tmp_path_factory, blocked_torch):
    root, _ = blocked_torch
    pythonpath = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    a = Agent(tmp_path_factory.mktemp("agent"), "--max-bytes", "1M", "--queue", "2",
              "--request-timeout", "30", "--threads", "1", env={"PYTHONPATH": pythonpath})
    yield a
    a.stop()


@pytest.fixture(scope="module")
def tight_agent(tmp_path_factory):
    """No queue, one-second request timeout."""
    a = Agent(tmp_path_factory.mktemp("tight"), "--queue", "0", "--request-timeout", "1", "--threads", "1")
    yield a
    a.stop()


# ----------------------------------------------------------------------------- the HTTP API


def test_health_needs_no_token_and_says_nothing_sensitive(agent):
    payload = agent.health()
    assert payload == {"status": "ok", "service": "slimdeploy-agent", "version": payload["version"],
                       "busy": False}
    status, headers, _ = agent.request("GET", "/v1/health", token=None)
    text = json.dumps(payload) + json.dumps(headers)
    assert TOKEN not in text and "/" not in json.dumps(payload) and "Python" not in text


def test_measure_returns_the_figure_without_torch(agent, blocked_torch):
    status, _, payload = agent.measure(SMALL, **QUICK)
    assert status == 200, payload
    for key in ("median_ms", "iqr_ms", "cv", "runs"):
        assert isinstance(payload[key], (int, float)) and payload[key] >= 0
    assert payload["median_ms"] > 0 and payload["runs"] >= 1
    assert payload["device"]["runtime"] == "onnxruntime" and payload["device"]["threads"] == 1
    assert payload["input_shape"] == list(SHAPE)
    assert not blocked_torch[1].exists(), "the agent or its worker tried to import torch"


@pytest.mark.parametrize("token, reason", [(None, "missing token"), ("wrong-token", "wrong token"),
                                           ("", "malformed")])
def test_missing_or_wrong_token_is_401(agent, token, reason):
    status, headers, payload = agent.measure(SMALL, token=token, **QUICK)
    assert status == 401 and reason in payload["error"]
    assert TOKEN not in payload["error"]
    status, _, _ = agent.request("GET", "/v1/device", token=token)
    assert status == 401


def test_oversized_body_is_413_without_reading_it(agent):
    head = (f"POST /v1/measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {10**12}\r\n\r\n").encode()
    start = time.monotonic()
    reply = agent.raw(head + b"\x08\x07abc")
    assert time.monotonic() - start < 4
    status_line, _, rest = reply.partition(b"\r\n")
    assert b" 413 " in status_line, reply[:200]
    assert b"1048576 bytes" in rest and b"--max-bytes" in rest
    # Just over the cap, body announced but never sent.
    reply = agent.raw(head.replace(str(10**12).encode(), str(2**20 + 1).encode()))
    assert b" 413 " in reply.partition(b"\r\n")[0]


def test_missing_content_length_is_411(agent):
    reply = agent.raw(f"POST /v1/measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    assert b" 411 " in reply.partition(b"\r\n")[0] and b"Content-Length" in reply


@pytest.mark.parametrize("body, reason", [
    (b"this is not an onnx model at all", "not an ONNX model"),
    (b"", "empty"),
    (_unloadable_model(), "onnxruntime could not load"),
])
def test_bytes_that_are_not_a_loadable_model_are_400_with_the_reason(agent, body, reason):
    status, _, payload = agent.measure(body, **QUICK)
    assert status == 400 and reason in payload["error"], payload


@pytest.mark.parametrize("query, reason", [
    ({"threads": "zero"}, "threads must be an integer"),
    ({"threads": 0}, "threads must be >= 1"),
    ({"max_seconds": 31}, "max_seconds must be"),
    ({"max_seconds": "nan"}, "finite"),
    ({"optimization": "maximal"}, "optimization level"),
    ({"provider": "NoSuchExecutionProvider"}, "not available"),
    ({"input_shape": "1,3,x"}, "input_shape"),
    ({"input_shape": "1,3,16,16"}, "disagrees"),
    ({"colour": "blue"}, "unknown query parameter"),
])
def test_invalid_query_parameters_are_400(agent, query, reason):
    status, _, payload = agent.measure(SMALL, **query)
    assert status == 400 and reason in payload["error"], payload


def test_unknown_paths_and_malformed_requests_get_json_errors(agent):
    assert agent.request("GET", "/v1/nothing")[0] == 404
    assert agent.request("POST", "/v1/health", b"x")[0] == 405
    assert agent.request("DELETE", "/v1/measure")[0] == 501
    reply = agent.raw(b"NONSENSE\r\n\r\n")
    assert b" 400 " in reply.partition(b"\r\n")[0] and b'"error"' in reply
    # A body shorter than announced.
    head = f"POST /v1/measure HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n"
    with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
        sock.sendall(head.encode() + b"short")
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):  # headers and body may come in separate segments
            reply += chunk
    assert b" 400 " in reply.partition(b"\r\n")[0] and b"ended after 5 of 100" in reply


def test_device_endpoint_describes_the_runtime(agent):
    status, _, payload = agent.request("GET", "/v1/device", optimization="basic")
    assert status == 200
    assert payload["runtime"] == "onnxruntime" and payload["graph_optimization"] == "basic"
    assert payload["threads"] == 1  # the agent's --threads


def test_agent_keeps_serving_after_bad_requests(agent):
    assert agent.health()["status"] == "ok"
    status, _, payload = agent.measure(SMALL, **QUICK)
    assert status == 200 and payload["median_ms"] > 0
    assert agent.proc.poll() is None


# ----------------------------------------------------------------------------- queue and time limits


def test_full_queue_is_429_and_a_long_measurement_is_cut_off(tight_agent):
    # min_runs far out of reach: the measurement runs to max_seconds, which with the worker's start-up
    # is past the one-second request timeout.
    slow = {"max_seconds": 1, "min_runs": 10**6, "threads": 1}
    results: list = []
    first = threading.Thread(target=lambda: results.append(tight_agent.measure(SMALL, **slow)))
    first.start()
    deadline = time.monotonic() + 5
    while not tight_agent.health()["busy"] and time.monotonic() < deadline:
        time.sleep(0.02)
    status, headers, payload = tight_agent.measure(SMALL, **slow)
    first.join(timeout=20)
    assert status == 429 and "busy" in payload["error"]
    assert int(headers["Retry-After"]) >= 1
    status, _, payload = results[0]
    assert status == 504 and "request timeout" in payload["error"], payload
    health = tight_agent.health()
    assert health["status"] == "ok" and not health["busy"]
    status, _, payload = tight_agent.measure(SMALL, max_seconds=0.2, warmup_s=0.05, min_runs=5)
    assert status in (200, 504), payload  # still serving (a start-up past 1 s on a loaded machine is a 504)


def test_a_crashing_measurement_process_is_a_500_not_a_dead_agent(monkeypatch):
    from slimdeploy.agent import server

    monkeypatch.setattr(server, "WORKER_CODE", "import os; os.abort()")
    agent_server = server.AgentServer(server.AgentConfig(token=TOKEN, port=0))
    try:
        status, payload = agent_server.run_measurement(SMALL, {"runtime": {}, "input_shape": None, "protocol": {}})
    finally:
        agent_server.server_close()
    assert status == 500 and "crashed (exit code" in payload["error"]


# ----------------------------------------------------------------------------- start-up


def _start_without(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SLIMDEPLOY_AGENT_TOKEN"}
    return subprocess.run([sys.executable, "-m", "slimdeploy", "agent", "--port", "0", *args],
                          capture_output=True, text=True, env=env, timeout=30)


def test_agent_refuses_to_start_without_a_token(tmp_path):
    done = _start_without(tmp_path)
    assert done.returncode == 2
    assert "--token-file" in done.stderr and "SLIMDEPLOY_AGENT_TOKEN" in done.stderr
    empty = tmp_path / "token"
    empty.write_text("  \n")
    done = _start_without(tmp_path, "--token-file", str(empty))
    assert done.returncode == 2 and "empty" in done.stderr


# ----------------------------------------------------------------------------- the remote runtime


def test_remote_runtime_measures_and_compares(agent, tmp_path):
    rt = get_runtime(f"remote:{agent.url}", {"token": TOKEN, "threads": 1})
    assert TOKEN not in json.dumps(rt.options) and TOKEN not in rt.describe()
    path = tmp_path / "small.onnx"
    path.write_bytes(SMALL)
    m = rt.measure(path, SHAPE, max_seconds=1, warmup_s=0.1)
    assert isinstance(m, Measurement) and m.median_ms > 0 and m.device["runtime"] == "onnxruntime"

    result = rt.compare([SMALL, BIG], SHAPE, rounds=3, max_rounds=3, request_seconds=0.3)
    assert isinstance(result, Comparison) and result.rounds >= 3
    assert result.ratios[0] == 1 and result.ratios[1] > 1.5
    assert len(result.round_ratios) == result.rounds and result.measurements[1].median_ms > result.measurements[0].median_ms


def test_remote_fingerprint_names_the_agent_device(agent):
    rt = get_runtime(f"remote:{agent.url}", {"token": TOKEN, "threads": 1})
    info = rt.device(SHAPE)
    assert info["runtime"] == "remote" and info["remote_runtime"] == "onnxruntime"
    assert info["input_shape"] == list(SHAPE) and len(info["remote_device"]) == 16
    # The same device reached at another address has the same fingerprint.
    other = get_runtime(f"remote:http://localhost:{agent.port}", {"token": TOKEN, "threads": 1})
    assert other.fingerprint(SHAPE) == rt.fingerprint(SHAPE)
    assert get_runtime(f"remote:{agent.url}", {"token": TOKEN, "threads": 2}).fingerprint(SHAPE) != \
        rt.fingerprint(SHAPE)


def test_remote_runtime_errors_are_clear(agent, monkeypatch):
    rt = get_runtime(f"remote:{agent.url}", {"token": "wrong-token"})
    with pytest.raises(SlimdeployError, match="401.*token|token.*401"):
        rt.measure(SMALL, SHAPE, max_seconds=1)
    rt = get_runtime(f"remote:{agent.url}", {"token": TOKEN})
    with pytest.raises(SlimdeployError, match="HTTP 400.*not an ONNX model"):
        rt.measure(b"garbage bytes", SHAPE)
    with pytest.raises(SlimdeployError, match="no local timer"):
        rt.timer(SMALL)
    with pytest.raises(SlimdeployError, match="does not take"):
        rt.measure(SMALL, SHAPE, session_config={})

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    dead = get_runtime(f"remote:http://127.0.0.1:{free}", {"token": TOKEN})
    with pytest.raises(SlimdeployError, match=f"connection refused.*|.*127.0.0.1:{free}"):
        dead.measure(SMALL, SHAPE)

    monkeypatch.delenv("SLIMDEPLOY_AGENT_TOKEN", raising=False)
    with pytest.raises(SlimdeployError, match="SLIMDEPLOY_AGENT_TOKEN"):
        get_runtime(f"remote:{agent.url}")
    with pytest.raises(SlimdeployError, match="http://HOST:PORT"):
        get_runtime("remote:ftp://example.com", {"token": TOKEN})
    with pytest.raises(SlimdeployError, match="credentials"):
        get_runtime("remote:http://user:pw@127.0.0.1:1", {"token": TOKEN})
    assert agent.health()["status"] == "ok"


def test_compress_through_a_local_agent_delivers_a_model_within_budget(tmp_path):
    from slimdeploy.pipeline import compress

    agent = Agent(tmp_path, "--threads", "1")
    try:
        runtime = get_runtime(f"remote:{agent.url}", {"token": TOKEN, "threads": 1})
        report = compress("slimdeploy.models:cifar_resnet8_wide", tmp_path / "c", latency="0.6x",
                          input_shape=(1, 3, 32, 32), runtime=runtime, samples=8, say=lambda text: None)
    finally:
        agent.stop()
    assert report["runtime"]["name"] == "remote"
    assert report["latency_ms"]["ratio"] <= 0.6
    source = report["search"]["latency_source"]
    assert source["kind"] == "fitted" and not source["validation"]["node_times"]  # the agent reports no nodes
    assert (tmp_path / "c" / "model.onnx").is_file()
