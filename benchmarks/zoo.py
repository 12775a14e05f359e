"""The model zoo through slimdeploy, one child process per model: every torchvision classifier under
100M parameters, timm models across families, torchvision segmentation, detection and video models.

    python benchmarks/zoo.py                                  # everything; rewrites the `zoo` section of RESULTS.md
    python benchmarks/zoo.py --models timm:resnest14d,torchvision:swin_t --write
    python benchmarks/zoo.py --sections timm,detection        # some sections only (prints, no write)
    python benchmarks/zoo.py --from-json runs.json            # re-render RESULTS.md from a saved run

Per model: build (random weights) → forward → analyse → prunable share (every group at its smallest
width) → prune to uniform 0.5 → export ONNX + parity → prune to random:0 → export + parity, and a
save/load round trip of the 0.5 model. A model passes when both prunes give exactly the requested
widths (the layer each group is named after outputs the requested width), the parameter count drops, the outputs keep their shapes, both ONNX files pass `verify_onnx` (default
criterion) and the reloaded 0.5 model gives bit-identical outputs. Detection models are checked on
what slimdeploy exports of them: the graph up to the heads (see slimdeploy.adapters.detection).

Each model runs in its own child (`--one SPEC`) with an address-space cap (RLIMIT_AS, default
14 GB) and a wall-clock limit (default 10 min), so an analysis that explodes kills only its child;
a killed child is a failure row. Children write their progress to a JSON file after every stage,
so a killed child still says where it was. Image models run from 64 px where they allow it (the
child falls back to the model's default size when the forward fails at 64 px).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_PARAMS = 100_000_000
SECTION = "zoo"

# timm models by family: small members, random weights.
TIMM = {
    "ResNet variants": ["resnet26d", "resnet50d", "seresnext26d_32x4d", "skresnet18", "ecaresnet26t",
                        "res2net50_26w_4s", "res2next50", "resnest14d", "resnest26d"],
    "EfficientNet / MobileNet / GhostNet / RexNet": [
        "efficientnet_b0", "tf_efficientnet_lite0", "mobilenetv2_100", "mobilenetv3_large_100",
        "mobilenetv4_conv_small", "ghostnet_100", "ghostnetv2_100", "rexnet_100", "mnasnet_100", "lcnet_050",
        "fbnetc_100", "mixnet_s"],
    "ConvNeXt": ["convnext_atto", "convnextv2_atto", "convnext_nano"],
    "RegNet": ["regnetx_002", "regnety_002", "regnetz_b16"],
    "DLA / HRNet / CSP": ["dla34", "dla46_c", "hrnet_w18_small", "cspresnet50", "cs3darknet_s", "darknet17"],
    "ViT / DeiT": ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "deit_small_distilled_patch16_224"],
    "MobileViT / EfficientFormer / LeViT / FastViT": [
        "mobilevit_xxs", "mobilevitv2_050", "efficientformer_l1", "efficientformerv2_s0", "levit_128s",
        "fastvit_t8", "fastvit_sa12"],
    "MetaFormers": ["poolformer_s12", "poolformerv2_s12", "convformer_s18", "caformer_s18"],
    "Reparameterizable": ["repvgg_a0", "mobileone_s0", "repghostnet_050", "repvit_m1"],
    "Other": ["densenet121", "inception_v3", "hgnetv2_b0", "edgenext_xx_small", "efficientvit_b0",
              "tiny_vit_5m_224", "swin_tiny_patch4_window7_224", "maxvit_nano_rw_256"],
}
SEGMENTATION = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large"]
DETECTION = {"ssdlite320_mobilenet_v3_large": 320, "ssd300_vgg16": 300, "fasterrcnn_mobilenet_v3_large_320_fpn": 320,
             "fasterrcnn_mobilenet_v3_large_fpn": 320, "retinanet_resnet50_fpn": 256, "fcos_resnet50_fpn": 256}
VIDEO = {"r2plus1d_18": (1, 3, 8, 64, 64), "r3d_18": (1, 3, 8, 64, 64), "mc3_18": (1, 3, 8, 64, 64),
         "s3d": (1, 3, 16, 224, 224)}
SECTIONS = ("torchvision", "timm", "segmentation", "detection", "video")

# Smallest input each torchvision classifier family allows (square side). CNNs end in adaptive
# pooling, so 64 px is enough; ViT's image_size is fixed at 224, Swin's and MaxViT's window
# partitioning needs 224; inception_v3 needs at least 75 px (96 keeps its reductions positive).
SIZE_BY_PREFIX = {"vit_": 224, "swin_": 224, "maxvit_": 224, "inception_v3": 96}


def catalogue() -> list[dict]:
    """Every model the full run covers: spec, section, family and input shape(s) to try in order."""
    entries = []
    for name, n_params in _torchvision_classifiers():
        size = next((s for p, s in SIZE_BY_PREFIX.items() if name.startswith(p)), 64)
        entries.append({"spec": f"torchvision:{name}", "section": "torchvision", "family": "classifier",
                        "shapes": [[1, 3, size, size]], "skip": n_params >= MAX_PARAMS})
    for family, names in TIMM.items():
        for name in names:
            entries.append({"spec": f"timm:{name}", "section": "timm", "family": family,
                            "shapes": [[1, 3, 64, 64], None]})  # None: the model's default size
    for name in SEGMENTATION:
        entries.append({"spec": f"torchvision:{name}", "section": "segmentation", "family": "segmentation",
                        "shapes": [[1, 3, 128, 128]]})
    for name, size in DETECTION.items():
        entries.append({"spec": f"torchvision:{name}", "section": "detection", "family": "detection",
                        "shapes": [[1, 3, size, size]]})
    for name, shape in VIDEO.items():
        entries.append({"spec": f"torchvision:{name}", "section": "video", "family": "video",
                        "shapes": [list(shape)]})
    return entries


SLOW = ("swin", "maxvit", "vit_", "regnet_y_16", "regnet_y_32", "wide_resnet", "s3d", "inception")


def _expected_cost(entry: dict) -> int:
    """A rough rank of a model's run time: detection and video, then known slow families, then the rest."""
    rank = {"detection": 3, "video": 3, "segmentation": 2}.get(entry["section"], 0)
    return rank + (2 if any(k in entry["spec"] for k in SLOW) else 0)


def _torchvision_classifiers() -> list[tuple[str, int]]:
    """(name, parameter count) of every torchvision classifier, counted on the meta device."""
    import warnings

    import torch
    import torchvision

    out = []
    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                with torch.device("meta"):
                    m = torchvision.models.get_model(name, weights=None)
            except Exception:
                m = torchvision.models.get_model(name, weights=None)
        out.append((name, sum(p.numel() for p in m.parameters())))
        del m
    return out


# ---------------------------------------------------------------------------------------------
# The child: one model, every stage, progress written to a JSON file after each stage.
# ---------------------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    """One line: exception type and the first non-empty line of its message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:300]


class _Child:
    def __init__(self, entry: dict, result_path: Path, workdir: Path):
        self.path = result_path
        self.workdir = workdir
        self.started = time.monotonic()
        self.r: dict = {"model": entry["spec"], "section": entry["section"], "family": entry["family"],
                        "input": None, "stage": "start", "done": False, "failures": [], "times": {}, "notes": []}

    def flush(self) -> None:
        self.r["elapsed_s"] = round(time.monotonic() - self.started, 1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.r, indent=1, default=str))
        os.replace(tmp, self.path)

    def stage(self, stage: str, fn, *args, **kwargs):
        """Run one stage; on an exception record a failure (stage, one-line reason, traceback)."""
        self.r["stage"] = stage
        self.flush()
        t0 = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # the benchmark records every failure and goes on where it can
            self.fail(stage, _reason(exc), traceback.format_exc())
            return None
        finally:
            self.r["times"][stage] = round(time.monotonic() - t0, 1)
            self.flush()

    def fail(self, stage: str, reason: str, tb: str | None = None) -> None:
        self.r["failures"].append({"stage": stage, "reason": reason, "traceback": tb})


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _off_widths(pruned, widths) -> list[str]:
    """Groups whose first layer (the one the group is named after) does not output the requested width."""
    from slimdeploy.adapters import rule_of

    wrong = []
    for name, want in widths.widths.items():
        layer = pruned.get_submodule(name)
        rule = rule_of(layer)
        have = rule.get_out_channels(layer) if rule else getattr(layer, "out_channels",
                                                                 getattr(layer, "out_features", None))
        if have != want:
            wrong.append(f"{name}: {have} (wanted {want})")
    return wrong


def _first_working_input(model, entry: dict, spec: str):
    """The first of the entry's shapes the model runs on (None: the model's default) and its outputs."""
    import torch

    from slimdeploy import zoo

    error = None
    for shape in entry["shapes"]:
        shape = shape or list(zoo.default_input_shape(spec))
        x = torch.randn(*shape)
        try:
            with torch.no_grad():
                model(x)
            return x
        except Exception as exc:  # try the next size; report the last failure
            error = exc
    raise error


def _view_shapes(model, x) -> list:
    """Output shapes of what slimdeploy exports of the model (detection: the trunk)."""
    import torch

    from slimdeploy.adapters import export_view
    from slimdeploy.outputs import named_tensors

    with torch.no_grad():
        return [(n, tuple(t.shape)) for n, t in named_tensors(export_view(model)[0](x))]


def _view_outputs(model, x) -> list:
    import torch

    from slimdeploy.adapters import export_view
    from slimdeploy.outputs import tensors

    with torch.no_grad():
        return tensors(export_view(model)[0](x))


def run_one(entry: dict, result_path: Path) -> int:
    import torch

    from slimdeploy.analysis import analyse
    from slimdeploy.checkpoint import load, save
    from slimdeploy.export import export_onnx, verify_onnx
    from slimdeploy.inspection import count_macs_params, prunable_share
    from slimdeploy.modes import set_eval
    from slimdeploy.prune import prune
    from slimdeploy.space import resolve_widths
    from slimdeploy.zoo import build

    torch.manual_seed(0)
    spec = entry["spec"]
    workdir = Path(tempfile.mkdtemp(prefix="zoo-"))
    c = _Child(entry, result_path, workdir)
    r = c.r

    model = c.stage("build", lambda: set_eval(build(spec)))
    if model is None:
        return _finish(c)
    r["params"] = _n_params(model)
    x = c.stage("forward", _first_working_input, model, entry, spec)
    if x is None:
        return _finish(c)
    r["input"] = list(x.shape)
    reference = c.stage("outputs", _view_shapes, model, x)
    r["macs"] = (c.stage("macs", count_macs_params, model, x) or [None])[0]

    a = c.stage("analyse", analyse, model, x)
    if a is None:
        return _finish(c)
    r["groups"] = len(a.space)
    r["scopes"] = len(a.scopes)
    r["structures"] = len(a.structures)
    r["notes"] = list(a.notes)
    if not len(a.space):
        c.fail("analyse", "no prunable channel groups found")
        return _finish(c)
    share = c.stage("prunable share", prunable_share, model, x, a)
    if share is not None:
        r["prunable"] = {"params": share["params"], "macs": share["macs"]}

    half_out = pruned_half = None
    for label, spec_w in (("0.5", 0.5), ("random", "random:0")):
        widths = c.stage(f"widths {label}", resolve_widths, a.space, spec_w)
        if widths is None:
            continue
        pruned = c.stage(f"prune {label}", prune, model, widths, x, analysis=a)
        if pruned is None:
            continue
        set_eval(pruned)
        out = {"params": _n_params(pruned),
               "reduced_groups": sum(w < a.space.group(g).width for g, w in widths.widths.items())}
        r[label] = out
        if out["params"] >= r["params"]:
            c.fail(f"prune {label}", f"parameters did not drop ({r['params']} -> {out['params']})")
        shapes = c.stage(f"forward {label}", _view_shapes, pruned, x)
        if shapes is not None and reference is not None and shapes != reference:
            c.fail(f"forward {label}", f"output shapes changed {reference[:2]} -> {shapes[:2]}")
        out["macs"] = (c.stage(f"macs {label}", count_macs_params, pruned, x) or [None])[0]

        wrong = c.stage(f"widths {label}", _off_widths, pruned, widths)
        if wrong is not None:
            out["wrong_widths"] = len(wrong)
            if wrong:
                c.fail(f"widths {label}", f"{len(wrong)} of {len(widths.widths)} groups off the request, "
                                          f"e.g. {'; '.join(wrong[:3])}")

        onnx_path = workdir / f"{label}.onnx"
        if c.stage(f"export {label}", export_onnx, pruned, x, onnx_path) is not None:
            report = c.stage(f"parity {label}", verify_onnx, pruned, onnx_path, x)
            if report is not None:
                out["parity"] = {k: v for k, v in report.to_json().items() if k != "outputs"}
                out["parity"]["n_outputs"] = len(report.outputs)
                if not report.passed:
                    c.fail(f"parity {label}", report.summary())
            onnx_path.unlink(missing_ok=True)
        if label == "0.5":
            pruned_half = pruned
            half_out = c.stage("outputs 0.5", _view_outputs, pruned, x)
        else:
            del pruned

    if pruned_half is not None and half_out is not None:
        directory = workdir / "ckpt"
        if c.stage("save", save, pruned_half, directory) is not None:
            loaded = c.stage("load", load, directory)
            if loaded is not None:
                again_out = c.stage("forward loaded", _view_outputs, loaded, x)
                if again_out is not None:
                    same = len(again_out) == len(half_out) and all(
                        a.shape == b.shape and torch.equal(a, b) for a, b in zip(again_out, half_out))
                    r["roundtrip_equal"] = same
                    if not same:
                        c.fail("load", "reloaded 0.5 model gives different outputs")
    return _finish(c)


def _finish(c: _Child) -> int:
    import shutil

    shutil.rmtree(c.workdir, ignore_errors=True)
    c.r["stage"] = "done"
    c.r["done"] = True
    c.flush()
    return 0


# ---------------------------------------------------------------------------------------------
# The parent: run each child under a memory cap and a timeout, collect rows.
# ---------------------------------------------------------------------------------------------

def _limit_memory(gb: float):
    def apply():
        cap = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return apply


def _file_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", spec)


def run_child(entry: dict, logdir: Path, memory_gb: float, timeout_s: float, threads: int | None = None) -> dict:
    """Run one model in its own child; `threads` caps its intra-op threads (for parallel jobs)."""
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    result = logdir / f"{_file_name(entry['spec'])}.json"
    log = logdir / f"{_file_name(entry['spec'])}.log"
    result.unlink(missing_ok=True)
    t0 = time.monotonic()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(entry), "--result", str(result)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            preexec_fn=_limit_memory(memory_gb), start_new_session=True)
        killed = None
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            killed = f"timed out after {timeout_s:g} s"
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and its ONNX runner
            proc.wait()
    wall = time.monotonic() - t0
    try:
        r = json.loads(result.read_text())
    except (OSError, json.JSONDecodeError):
        r = {"model": entry["spec"], "section": entry["section"], "family": entry["family"], "input": None,
             "stage": "start", "done": False, "failures": [], "times": {}, "notes": []}
    r["wall_s"] = round(wall, 1)
    r["log"] = str(log)
    if not r.get("done"):
        if killed is None:
            rc = proc.returncode
            how = f"killed by signal {signal.Signals(-rc).name}" if rc < 0 else f"exited with code {rc}"
            tail = _log_tail(log)
            killed = f"child {how}" + (f": {tail}" if tail else "")
            if rc == -signal.SIGKILL:
                killed += " (likely the kernel's OOM killer)"
        r["failures"].append({"stage": r.get("stage", "start"), "reason": killed[:300], "traceback": None})
    return r


def _log_tail(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:200] if lines else ""


def passed(r: dict) -> bool:
    return bool(r.get("done")) and not r.get("failures")


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------

def _fmt_params(n) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}M"


def _fmt_share(r: dict, key: str) -> str:
    value = (r.get("prunable") or {}).get(key)
    return "–" if value is None else f"{value:.1%}"


def _fmt_removed(r: dict, label: str) -> str:
    params = (r.get(label) or {}).get("params")
    return "–" if params is None or not r.get("params") else f"{1 - params / r['params']:.0%}"


def _fmt_err(r: dict) -> str:
    errs = [(r.get(label) or {}).get("parity", {}).get("max_abs_error") for label in ("0.5", "random")]
    errs = [float(e) for e in errs if e is not None]
    return f"{max(errs):.1e}" if errs else "–"


def _fmt_input(shape) -> str:
    return "–" if not shape else "×".join(str(d) for d in shape[1:])


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _result(r: dict) -> str:
    if passed(r):
        return "pass"
    f = r["failures"][0]
    more = f" (+{len(r['failures']) - 1} more)" if len(r["failures"]) > 1 else ""
    return f"**fail** at {f['stage']}: {_md_escape(f['reason'][:180])}{more}"


TABLE_HEAD = [
    "| model | family | input | params | groups | scopes | prunable params | prunable MACs | removed @0.5 "
    "| removed @random | err | time | result |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
]
SECTION_TITLES = {"torchvision": "torchvision classifiers (every one under 100M parameters)",
                  "timm": "timm models across families", "segmentation": "torchvision segmentation",
                  "detection": "torchvision detection", "video": "torchvision video"}


def render(rows: list[dict], total_s: float, meta: dict) -> str:
    n_pass = sum(passed(r) for r in rows)
    lines = [
        f"**{n_pass} of {len(rows)} models pass** (random init; total run time {total_s / 60:.1f} min, one "
        "child process per model"
        + (f", {meta['jobs']} at a time with one thread each" if meta.get("jobs", 1) > 1 else "")
        + f", memory cap {meta.get('memory_gb', '?'):g} GB, timeout "
        f"{meta.get('timeout_s', 0) / 60:g} min). Per section: "
        + ", ".join(f"{s} {sum(passed(r) for r in rows if r.get('section') == s)}/"
                    f"{sum(r.get('section') == s for r in rows)}" for s in SECTIONS
                    if any(r.get("section") == s for r in rows)) + ".",
        "",
        "A model passes when pruning to uniform 0.5 and to `random:0` both give exactly the requested width in "
        "every group (the layer a group is named after outputs that width), the parameter count drops, the outputs keep "
        "their shapes, both ONNX exports pass the parity gate (`verify_onnx` default: every element within "
        "atol 1e-4 + rtol 1e-3·|torch| or within 1e-4 of the output's range, top-1 agreement 100 %; 2 photos + 2 "
        "random inputs for images, 4 random inputs otherwise), and the 0.5 model saved and loaded back gives "
        "bit-identical outputs. *Prunable params/MACs*: the share that pruning every offered group to its "
        "smallest width removes (what `inspect` reports; low means most of the model stays fixed). *Removed* "
        "is the share of parameters the 0.5 and random:0 prunes removed. *Scopes* is the number of parts "
        "analysed separately (1 = the whole model at once; * = a note, see below). *err* is the larger max abs "
        "parity error of the two exports. Detection rows check the exported trunk (the graph stops before box "
        "decoding and NMS, see `slimdeploy/adapters/detection.py`).",
    ]
    for section in SECTIONS:
        members = sorted((r for r in rows if r.get("section") == section), key=lambda r: (r["family"], r["model"]))
        if not members:
            continue
        lines += ["", f"### {SECTION_TITLES[section]}: {sum(passed(r) for r in members)} of {len(members)} pass",
                  "", *TABLE_HEAD]
        for r in members:
            scopes = r.get("scopes", "–")
            if r.get("notes"):
                scopes = f"{scopes}*"
            name = r["model"].split(":", 1)[1]
            lines.append(
                f"| {name} | {r['family']} | {_fmt_input(r.get('input'))} | {_fmt_params(r.get('params'))} | "
                f"{r.get('groups', '–')} | {scopes} | {_fmt_share(r, 'params')} | {_fmt_share(r, 'macs')} | "
                f"{_fmt_removed(r, '0.5')} | {_fmt_removed(r, 'random')} | {_fmt_err(r)} | "
                f"{r.get('wall_s', 0):.0f} s | {_result(r)} |")
    if meta.get("skipped"):
        lines += ["", f"Not run (torchvision classifiers over {MAX_PARAMS // 1_000_000}M parameters): "
                      f"{', '.join(meta['skipped'])}."]
    noted = [r for r in rows if r.get("notes")]
    if noted:
        lines += ["", "### Notes from the analysis", "",
                  "Where slimdeploy left widths fixed: a scope it analysed part by part (torch-pruning raised, ran "
                  "past the bound, or the trial prune broke it), or groups it left at full width because pruning "
                  "them breaks the model. The first note of each model:", ""]
        for r in sorted(noted, key=lambda r: r["model"]):
            lines.append(f"- **{r['model']}** ({len(r['notes'])} note(s)): `{_md_escape(r['notes'][0][:240])}`")
    if meta.get("reading"):
        lines += ["", meta["reading"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated specs (torchvision:NAME, timm:NAME) from the catalogue")
    p.add_argument("--sections", help=f"comma-separated subset of {', '.join(SECTIONS)}")
    p.add_argument("--memory-gb", type=float, default=14.0, help="address-space cap of each child (RLIMIT_AS)")
    p.add_argument("--timeout", type=float, default=600.0, help="wall-clock limit of each child in seconds")
    p.add_argument("--jobs", type=int, default=1,
                   help="children run at once (each then limited to one thread; for many-core machines)")
    p.add_argument("--logs", help="folder for per-model logs and JSON (default: a new temp folder)")
    p.add_argument("--json", help="also write all rows to this JSON file (updated after every model)")
    p.add_argument("--resume", action="store_true", help="with --json: skip the models that file already holds")
    p.add_argument("--from-json", help="render RESULTS.md from a JSON file written by --json; run nothing")
    p.add_argument("--reading", help="a paragraph (or @file) appended to the section when rendering")
    p.add_argument("--write", action="store_true", help="write RESULTS.md also for a subset")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.one:
        return run_one(json.loads(args.one), Path(args.result))

    command = "python benchmarks/zoo.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    sys.path.insert(0, str(HERE))
    from results import provenance, reading_text, write_section

    reading = reading_text(args.reading)

    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        meta = {**data["meta"], **({"reading": reading} if reading else {})}
        markdown = render(data["rows"], data["total_s"], meta)
        print(markdown)
        if not args.no_write:
            write_section(SECTION, markdown, meta.get("command", command), origin=meta.get("origin"))
        return 0

    entries = catalogue()
    known = {e["spec"]: e for e in entries}
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in known]
        if unknown:
            p.error(f"unknown model(s): {', '.join(unknown)} (specs look like torchvision:resnet18, timm:resnest14d)")
        entries = [known[m] for m in wanted]
    if args.sections:
        chosen = [s.strip() for s in args.sections.split(",")]
        if set(chosen) - set(SECTIONS):
            p.error(f"unknown section(s) {', '.join(set(chosen) - set(SECTIONS))}; choose from {', '.join(SECTIONS)}")
        entries = [e for e in entries if e["section"] in chosen]
    if args.jobs > 1:  # the longest first, so that the run does not end waiting on one slow child
        entries.sort(key=_expected_cost, reverse=True)
    skipped = sorted(e["spec"].split(":", 1)[1] for e in entries if e.get("skip"))
    entries = [e for e in entries if not e.get("skip") or args.models]
    rows: list[dict] = []
    spent = 0.0
    if args.resume and args.json and Path(args.json).exists():
        saved = json.loads(Path(args.json).read_text())
        rows, spent = saved["rows"], saved["total_s"]
        entries = [e for e in entries if e["spec"] not in {r["model"] for r in rows}]
    logdir = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="slimdeploy-zoo-"))
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"{len(entries)} models; logs in {logdir}", flush=True)
    origin = provenance()
    try:
        from importlib.metadata import version
        origin["versions"] += f", timm {version('timm')}"
    except Exception:  # timm absent: the timm rows say so themselves
        pass
    meta = {"command": command, "memory_gb": args.memory_gb, "timeout_s": args.timeout, "skipped": skipped,
            "jobs": args.jobs, "origin": origin}

    t_start = time.monotonic()
    threads = 1 if args.jobs > 1 else None
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_child, e, logdir, args.memory_gb, args.timeout, threads) for e in entries]
        for done, future in enumerate(as_completed(futures), 1):
            r = future.result()
            rows.append(r)
            status = "PASS" if passed(r) else f"FAIL at {r['failures'][0]['stage']}: {r['failures'][0]['reason'][:160]}"
            share = r.get("prunable") or {}
            print(f"[{done}/{len(entries)}] {r['model']} {r.get('wall_s', 0):.0f} s groups={r.get('groups')} "
                  f"prunable params={share.get('params', 0):.0%} {status}", flush=True)
            if args.json:
                tmp = Path(args.json + ".tmp")
                tmp.write_text(json.dumps({"rows": rows, "total_s": spent + time.monotonic() - t_start,
                                           "meta": meta}, indent=1))
                os.replace(tmp, args.json)

    total_s = spent + time.monotonic() - t_start
    markdown = render(rows, total_s, {**meta, **({"reading": reading} if reading else {})})
    n_pass = sum(passed(r) for r in rows)
    print(f"\n{n_pass} of {len(rows)} pass in {total_s / 60:.1f} min", flush=True)
    if not args.no_write and (not (args.models or args.sections) or args.write):
        path = write_section(SECTION, markdown, command, origin=meta["origin"])
        print(f"wrote the {SECTION!r} section of {path}")
    else:
        print(markdown)
    return 0 if n_pass == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
