"""The agent's defences, each against a real `slimdeploy agent` subprocess on loopback.

Memory and CPU-time caps on the measuring process; refusals that Python's own HTTP clients can
read while tens of MB are still on the wire; HTTPS with a self-signed certificate made here.
"""
from __future__ import annotations

import os
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from agent_helpers import QUICK, SHAPE, SMALL, TOKEN, Agent
from slimdeploy.agent.tls import is_loopback, plain_http_warning
from slimdeploy.errors import SlimdeployError
from slimdeploy.runtimes import get_runtime

SAFETY_NET = 8 << 30  # address space of the agent's whole process tree, should its own cap ever fail
BODY_30MB = bytes(30 << 20)


def _expand_model(dims: list[int]) -> bytes:
    """A model of about 200 bytes whose one Expand node makes a float tensor of shape `dims`."""
    shape = numpy_helper.from_array(np.array(dims, dtype=np.int64), "shape")
    nodes = [helper.make_node("Expand", ["x", "shape"], ["big"]),
             helper.make_node("ReduceMax", ["big"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "expand", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


EXPAND_16GB = _expand_model([4, 1024, 1024, 1024])  # 4 Gi floats


def _safety_net() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SAFETY_NET, SAFETY_NET))


@pytest.fixture(scope="module")
def capped_agent(tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("capped"), "--max-memory", "2G", "--max-cpu-seconds", "3",
              "--max-bytes", "40M", "--request-timeout", "120", "--threads", "1", preexec_fn=_safety_net)
    yield a
    a.stop()


def _read_all(sock: socket.socket) -> bytes:
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply


# ----------------------------------------------------------------------------- memory and CPU time


def test_a_model_that_needs_16_gb_is_refused_naming_the_limit_and_the_agent_keeps_serving(capped_agent):
    assert len(EXPAND_16GB) < 1024
    status, _, payload = capped_agent.measure(EXPAND_16GB, max_seconds=2, warmup_s=0.1)
    assert status == 507, payload
    # The cap named is the one in force in the measuring process (the safety net is 8 GiB).
    assert "--max-memory of 2.0 GiB" in payload["error"] and str(16 << 30) in payload["error"]
    status, _, payload = capped_agent.measure(SMALL, **QUICK)
    assert status == 200 and payload["median_ms"] > 0
    assert capped_agent.proc.poll() is None
    assert "2.0 GiB of address space, 3 CPU seconds" in capped_agent.log()


def test_a_measurement_past_its_cpu_time_is_stopped_with_504_and_the_agent_keeps_serving(capped_agent):
    start = time.monotonic()
    # Ten million runs asked for: without the CPU cap this would run for its whole 100 s.
    status, _, payload = capped_agent.measure(SMALL, max_seconds=100, min_runs=10**7, max_runs=10**7,
                                              warmup_s=0.1, threads=1)
    assert status == 504, payload
    assert "CPU-time limit of 3 s" in payload["error"] and "--max-cpu-seconds" in payload["error"]
    assert time.monotonic() - start < 60  # 3 CPU seconds take longer on a busy machine, but not 100 s
    status, _, _ = capped_agent.measure(SMALL, **QUICK)
    assert status == 200


# ----------------------------------------------------------------------------- refusals a client can read


def test_urllib_reads_401_and_400_while_sending_30_mb(capped_agent):
    """Plain urllib sends the whole body before reading: the agent reads it (up to --max-bytes) and
    answers, instead of closing on it (which urllib reported as a broken pipe)."""
    for _ in range(2):  # and the connection handling holds up for the next one
        status, _, payload = capped_agent.request("POST", "/v1/measure", BODY_30MB, token="wrong-token")
        assert status == 401 and "wrong token" in payload["error"]
    status, _, payload = capped_agent.request("POST", "/v1/measure", BODY_30MB, threads="zero")
    assert status == 400 and "threads must be an integer" in payload["error"]


def test_the_remote_runtime_reads_refusals_of_30_and_50_mb_models(capped_agent):
    """Through the project's own client (which waits for 100 Continue, see the next test)."""
    runtime = get_runtime(f"remote:{capped_agent.url}", {"token": TOKEN, "threads": 1})
    with pytest.raises(SlimdeployError, match=r"HTTP 400.*max_seconds must be"):
        runtime.measure(BODY_30MB, SHAPE, max_seconds=10**6)
    with pytest.raises(SlimdeployError, match=r"too large \(HTTP 413\).*--max-bytes"):
        runtime.measure(bytes(50 << 20), SHAPE)
    assert runtime.measure(SMALL, SHAPE, **{k: v for k, v in QUICK.items() if k != "threads"}).median_ms > 0


def test_expect_100_continue_gets_a_refusal_before_the_body_and_continue_once_accepted(capped_agent):
    def head(token: str, length: int) -> bytes:
        return (f"POST /v1/measure?max_seconds=1&warmup_s=0.1 HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {length}\r\nExpect: 100-continue\r\n\r\n").encode()

    with socket.create_connection(("127.0.0.1", capped_agent.port), timeout=10) as sock:
        sock.sendall(head("wrong-token", len(BODY_30MB)))  # and never the body
        reply = _read_all(sock)
    assert reply.startswith(b"HTTP/1.1 401 ") and b"wrong token" in reply and b" 100 " not in reply

    with socket.create_connection(("127.0.0.1", capped_agent.port), timeout=30) as sock:
        sock.sendall(head(TOKEN, len(SMALL)))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(SMALL)
        reply = _read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200 ") and b"median_ms" in reply


# ----------------------------------------------------------------------------- TLS


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1 with its key, made by openssl or `cryptography`."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl:
        subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        return cert, key
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        pytest.skip("neither the openssl command nor the cryptography package is here to make a test certificate")
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(private.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(private, hashes.SHA256()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, key


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_agent(tmp_path_factory, certificate):
    cert, key = certificate
    a = Agent(tmp_path_factory.mktemp("tls-agent"), "--tls-cert", str(cert), "--tls-key", str(key),
              "--threads", "1", context=ssl.create_default_context(cafile=str(cert)))
    yield a
    a.stop()


def test_tls_round_trip_with_a_self_signed_certificate(tls_agent, certificate):
    assert tls_agent.url.startswith("https://127.0.0.1:")
    assert tls_agent.health()["status"] == "ok"
    cert = str(certificate[0])
    for host in ("127.0.0.1", "localhost"):  # both names the certificate holds
        runtime = get_runtime(f"remote:https://{host}:{tls_agent.port}",
                              {"token": TOKEN, "threads": 1, "ca_file": cert})
        m = runtime.measure(SMALL, SHAPE, max_seconds=1, warmup_s=0.1)
        assert m.median_ms > 0 and m.device["runtime"] == "onnxruntime"
        assert "ca_file" not in runtime.options and TOKEN not in runtime.describe()
    with pytest.raises(SlimdeployError, match=r"HTTP 400.*max_seconds must be"):  # refusals over TLS too
        runtime.measure(BODY_30MB, SHAPE, max_seconds=10**6)


def test_tls_agent_refuses_unverified_and_plain_clients_and_keeps_serving(tls_agent, tmp_path):
    unverified = get_runtime(f"remote:{tls_agent.url}", {"token": TOKEN})  # the system's CAs only
    with pytest.raises(SlimdeployError, match=r"could not be verified.*ca_file=PEM"):
        unverified.measure(SMALL, SHAPE)
    plain = get_runtime("remote:" + tls_agent.url.replace("https://", "http://"), {"token": TOKEN})
    with pytest.raises(SlimdeployError, match=r"https://"):
        plain.measure(SMALL, SHAPE)
    with pytest.raises(SlimdeployError, match="ca_file is for https://"):
        get_runtime("remote:" + tls_agent.url.replace("https://", "http://"), {"token": TOKEN, "ca_file": str(tmp_path)})
    with pytest.raises(SlimdeployError, match="no such file"):
        get_runtime(f"remote:{tls_agent.url}", {"token": TOKEN, "ca_file": str(tmp_path / "missing.pem")})
    assert "TLS handshake with 127.0.0.1 failed" in tls_agent.log()
    assert tls_agent.health()["status"] == "ok" and tls_agent.proc.poll() is None


# ----------------------------------------------------------------------------- start-up


def test_plain_http_beyond_loopback_is_warned_about(tmp_path):
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback(host) and plain_http_warning(host, tls=False) is None
    for host in ("0.0.0.0", "::", "192.168.1.20", "edge-board.local"):
        assert not is_loopback(host)
        assert "--tls-cert" in plain_http_warning(host, tls=False)
        assert plain_http_warning(host, tls=True) is None
    agent = Agent(tmp_path, "--host", "0.0.0.0")  # listens only for as long as it takes to start
    try:
        assert "warning: listening on 0.0.0.0 over plain HTTP" in agent.log()
    finally:
        agent.stop()


def _start(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SLIMDEPLOY_AGENT_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "slimdeploy", "agent", "--port", "0", *args],
                          capture_output=True, text=True, env=env, timeout=30)


@pytest.mark.parametrize("args, reason", [
    (("--tls-cert", "cert.pem"), "--tls-cert and --tls-key go together"),
    (("--tls-cert", "nowhere.pem", "--tls-key", "nowhere.pem"), "no such file"),
    (("--tls-cert", "garbage", "--tls-key", "garbage"), "cannot use --tls-cert"),
    (("--max-memory", "1K"), "--max-memory must be at least"),
    (("--max-cpu-seconds", "0"), "--max-cpu-seconds must be a positive number"),
])
def test_bad_limits_or_tls_files_stop_the_start_in_one_line(tmp_path, args, reason):
    (tmp_path / "garbage").write_text("not a certificate\n")
    done = _start(*(str(tmp_path / a) if a in ("cert.pem", "garbage") else a for a in args))
    assert done.returncode == 2 and reason in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def test_the_agent_help_names_its_limits_and_tls_options(capsys):
    from slimdeploy.cli import main

    with pytest.raises(SystemExit) as done:
        main(["agent", "--help"])
    text = capsys.readouterr().out
    assert done.value.code == 0
    for option in ("--max-memory", "--max-cpu-seconds", "--tls-cert", "--tls-key", "50% of this device's RAM"):
        assert option in text
