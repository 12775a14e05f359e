"""Installing like a user: the built wheel, in a fresh venv, measures with its default runtime.

The slowest test of the suite (about a minute, most of it `compress`): it copies the sources
to a temporary folder, builds the wheel there (no build isolation: setuptools from this venv),
creates a venv without pip, installs the wheel into it with this venv's pip and no index, and
runs `slimdeploy compress` from the new venv's own console script. The new venv reaches the
dependencies (torch, onnxruntime, ...) through a .pth file naming a folder of links to this
venv's packages, slimdeploy and its plugins left out, so nothing is downloaded and nothing of
this checkout is importable there.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "slimdeploy", "plugins/onnxruntime")


def _run(argv: list, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv[:4]} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _dependencies_folder(target: Path) -> Path:
    """Links to everything this venv has installed except slimdeploy's own packages and .pth hooks."""
    target.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("slimdeploy", "__editable__", "__pycache__")) or name.endswith(".pth"):
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.mark.slowest
def test_the_wheel_in_a_fresh_venv_compresses_with_its_default_runtime(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["SLIMDEPLOY_DB"] = str(tmp_path / "latency.sqlite")
    src = tmp_path / "src"
    for item in SOURCES:
        copy = shutil.copytree if (ROOT / item).is_dir() else shutil.copy2
        (src / item).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / item, src / item, **({"ignore": shutil.ignore_patterns("__pycache__", "*.egg-info")}
                                        if copy is shutil.copytree else {}))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", tmp_path / "dist", src], tmp_path, env)
    wheel, = (tmp_path / "dist").glob("slimdeploy-*.whl")

    fresh = tmp_path / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", fresh], tmp_path, env)
    python = fresh / "bin" / "python"
    fresh_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           tmp_path, env).stdout.strip())
    (fresh_site / "_slimdeploy_test_dependencies.pth").write_text(f"{_dependencies_folder(tmp_path / 'deps')}\n")
    # Dependencies are resolved (not skipped) and all found installed: --no-index would fail on any other.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "-q", wheel], tmp_path, env)

    facts = json.loads(_run([python, "-c", (
        "import json, slimdeploy, slimdeploy_onnxruntime\n"
        "from importlib.metadata import entry_points\n"
        "print(json.dumps({'files': [slimdeploy.__file__, slimdeploy_onnxruntime.__file__],\n"
        "                  'runtimes': {e.name: e.dist.name for e in entry_points(group='slimdeploy.runtimes')}}))")],
        tmp_path, env).stdout)
    assert all(f.startswith(str(fresh_site)) for f in facts["files"]), facts
    assert facts["runtimes"] == {"onnxruntime": "slimdeploy", "remote": "slimdeploy"}  # torch, tensorrt: apart

    out = tmp_path / "compressed"
    _run([fresh / "bin" / "slimdeploy", "compress", "slimdeploy.models:cifar_resnet8", "--input-shape", "1,3,32,32",
          "--latency", "0.8x", "--threads", "1", "--latency-model", "measure", "--out", out, "--quiet"],
         tmp_path, env, timeout=600)
    report = json.loads((out / "report.json").read_text())
    assert report["runtime"]["name"] == "onnxruntime" and report["latency_ms"]["ratio"] <= 0.8
    assert (out / "model.onnx").stat().st_size > 0 and (out / "weights.pt").is_file()
