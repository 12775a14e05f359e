"""Every torchvision classifier under 100M parameters through slimdeploy, one child process each.

    python benchmarks/zoo.py                        # the whole zoo; rewrites the `zoo` section of RESULTS.md
    python benchmarks/zoo.py --models resnet18,vit_b_16 --write
    python benchmarks/zoo.py --from-json runs.json  # re-render RESULTS.md from a saved run

Per model: analyse → prune to uniform 0.5 → export ONNX + parity → prune to random:0 → export +
parity, and a save/load round trip of the 0.5 model. A model passes when both prunes give exactly
the requested widths (the pruned model is analysed again and its groups must have the requested
widths), the parameter count drops, the forward still runs with the same output shape, both ONNX
files pass `verify_onnx`, and the reloaded 0.5 model gives bit-identical outputs.

Each model runs in its own child (`--one NAME`) with an address-space cap (RLIMIT_AS, default
14 GB) and a wall-clock limit (default 15 min), so an analysis that explodes kills only its child;
a killed child is a failure row. Children write their progress to a JSON file after every stage,
so a killed child still says where it was. Models run from the smallest input each allows.
"""
from __future__ import annotations

import argparse
import concurrent.futures
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_PARAMS = 100_000_000
SECTION = "zoo"

# Smallest input each family allows (square side). CNNs end in adaptive pooling, so 64 px is
# enough; ViT's image_size is fixed at 224 (position embeddings), Swin's and MaxViT's window
# partitioning needs 224 (MaxViT's block/grid attention requires sides divisible by 7·2^5);
# inception_v3 needs at least 75 px (96 keeps its 3x3 stride-2 reductions positive).
SIZE_DEFAULT = 64
SIZE_BY_PREFIX = {"vit_": 224, "swin_": 224, "maxvit_": 224, "inception_v3": 96}


def input_size(name: str) -> int:
    for prefix, size in SIZE_BY_PREFIX.items():
        if name.startswith(prefix):
            return size
    return SIZE_DEFAULT


# ---------------------------------------------------------------------------------------------
# The child: one model, every stage, progress written to a JSON file after each stage.
# ---------------------------------------------------------------------------------------------

def _reason(exc: BaseException) -> str:
    """One line: exception type and the first non-empty line of its message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return text[:300]


class _Child:
    def __init__(self, name: str, size: int, result_path: Path, workdir: Path):
        self.path = result_path
        self.workdir = workdir
        self.started = time.monotonic()
        self.r: dict = {"model": name, "input": [1, 3, size, size], "stage": "start", "done": False,
                        "failures": [], "times": {}, "notes": []}

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


def _out_width(module) -> int | None:
    return getattr(module, "out_channels", getattr(module, "out_features", None))


def run_one(name: str, size: int, result_path: Path) -> int:
    import torch

    from slimdeploy.analysis import analyse
    from slimdeploy.checkpoint import load, save
    from slimdeploy.export import export_onnx, verify_onnx
    from slimdeploy.inspection import count_macs_params
    from slimdeploy.prune import prune
    from slimdeploy.space import resolve_widths
    from slimdeploy.zoo import build

    torch.manual_seed(0)
    workdir = Path(tempfile.mkdtemp(prefix=f"zoo-{name}-"))
    c = _Child(name, size, result_path, workdir)
    r = c.r
    x = torch.randn(1, 3, size, size)

    model = c.stage("build", lambda: build(f"torchvision:{name}").eval())
    if model is None:
        return _finish(c)
    r["params"] = _n_params(model)
    with torch.no_grad():
        reference = c.stage("forward", lambda: model(x))
    if reference is None:
        return _finish(c)
    r["macs"] = c.stage("macs", lambda: count_macs_params(model, x)[0])

    a = c.stage("analyse", analyse, model, x)
    if a is None:
        return _finish(c)
    r["groups"] = len(a.space)
    r["scopes"] = len(a.scopes)
    r["scope_paths"] = [s.path or "<model>" for s in a.scopes]
    r["notes"] = list(a.notes)
    if not len(a.space):
        c.fail("analyse", "no prunable channel groups found")
        return _finish(c)

    pruned_half = None
    for label, spec in (("0.5", 0.5), ("random", "random:0")):
        widths = c.stage(f"widths {label}", resolve_widths, a.space, spec)
        if widths is None:
            continue
        pruned = c.stage(f"prune {label}", prune, model, widths, x, analysis=a)
        if pruned is None:
            continue
        pruned.eval()
        out = {"params": _n_params(pruned),
               "reduced_groups": sum(w < a.space.group(g).width for g, w in widths.widths.items())}
        r[label] = out
        if out["params"] >= r["params"]:
            c.fail(f"prune {label}", f"parameters did not drop ({r['params']} -> {out['params']})")

        with torch.no_grad():
            y = c.stage(f"forward {label}", lambda: pruned(x))
        if y is not None and tuple(y.shape) != tuple(reference.shape):
            c.fail(f"forward {label}", f"output shape changed {tuple(reference.shape)} -> {tuple(y.shape)}")
        out["macs"] = c.stage(f"macs {label}", lambda: count_macs_params(pruned, x)[0])

        again = c.stage(f"re-analyse {label}", analyse, pruned, x)
        if again is not None:
            got = {g.name: g.width for g in again.space.groups}
            wrong = []
            for g, want in widths.widths.items():
                have = got.get(g)
                if have is None:  # a group pruned below 2 channels is no longer a group: look at the layer
                    try:
                        have = _out_width(pruned.get_submodule(g))
                    except AttributeError:
                        have = None
                if have != want:
                    wrong.append(f"{g}: {have} (wanted {want})")
            out["wrong_widths"] = len(wrong)
            if wrong:
                c.fail(f"widths {label}", f"{len(wrong)} of {len(widths.widths)} groups off the request, "
                                          f"e.g. {'; '.join(wrong[:3])}")

        onnx_path = workdir / f"{label}.onnx"
        if c.stage(f"export {label}", export_onnx, pruned, x, onnx_path) is not None:
            report = c.stage(f"parity {label}", verify_onnx, pruned, onnx_path, x)
            if report is not None:
                out["parity"] = report.to_json()
                if not report.passed:
                    c.fail(f"parity {label}", report.summary())
            onnx_path.unlink(missing_ok=True)
        if label == "0.5":
            pruned_half = pruned
            with torch.no_grad():
                half_out = pruned(x) if y is not None else None
        else:
            del pruned

    if pruned_half is not None:
        directory = workdir / "ckpt"
        if c.stage("save", save, pruned_half, directory) is not None:
            loaded = c.stage("load", load, directory)
            if loaded is not None and half_out is not None:
                with torch.no_grad():
                    again_out = c.stage("forward loaded", lambda: loaded(x))
                if again_out is not None:
                    diff = (again_out - half_out).abs().max().item() if again_out.shape == half_out.shape else None
                    r["roundtrip_max_abs_diff"] = diff
                    if diff is None or not torch.equal(again_out, half_out):
                        c.fail("load", f"reloaded 0.5 model differs (max abs diff {diff})")
    return _finish(c)


def _finish(c: _Child) -> int:
    import shutil

    shutil.rmtree(c.workdir, ignore_errors=True)
    c.r["stage"] = "done"
    c.r["done"] = True
    c.flush()
    return 0


# ---------------------------------------------------------------------------------------------
# The parent: pick the models, run each child under a memory cap and a timeout, collect rows.
# ---------------------------------------------------------------------------------------------

def zoo_models() -> list[tuple[str, int]]:
    """(name, parameter count) of every torchvision classifier under MAX_PARAMS, by name.

    Counted on the meta device (no memory, no init cost); a model that cannot build there is
    built for real, with weights=None.
    """
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


def _limit_memory(gb: float):
    def apply():
        cap = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return apply


def run_child(name: str, logdir: Path, memory_gb: float, timeout_s: float) -> dict:
    size = input_size(name)
    result = logdir / f"{name}.json"
    log = logdir / f"{name}.log"
    result.unlink(missing_ok=True)
    t0 = time.monotonic()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--one", name, "--size", str(size),
             "--result", str(result)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
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
        r = {"model": name, "input": [1, 3, size, size], "stage": "start", "done": False,
             "failures": [], "times": {}, "notes": []}
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

# Failure classes: (key, stage regex, reason regex, explanation). The first match wins.
FAILURE_CLASSES = [
    ("timeout", r".*", r"timed out after",
     "The child ran past the wall-clock limit and was killed; the stage column says where it was."),
    ("memory", r".*", r"MemoryError|OOM|signal SIGKILL|needed more than .* GB",
     "The child ran out of its address-space cap (or was killed by the kernel); the stage column "
     "says where."),
    ("parity", r"^parity", r".*",
     "The ONNX file runs but ONNX Runtime's outputs differ from PyTorch's beyond atol=1e-4 + rtol=1e-3·|torch|."),
    ("export", r"^export", r".*",
     "Neither the TorchScript nor the dynamo ONNX exporter could export the pruned model."),
    ("widths", r"^widths", r".*",
     "The pruned model's groups do not have the requested widths: torch-pruning removed a different "
     "number of channels than asked for in some coupled layer."),
    ("roundtrip", r"^(save|load|forward loaded)", r".*",
     "The 0.5 model could not be saved, rebuilt from its recipe, or gave different outputs after loading."),
    ("prune", r"^(prune|forward [0-9r])", r".*",
     "Pruning to the requested widths raised, or left a model whose forward breaks or keeps its size."),
    ("analyse", r"^analyse", r".*",
     "slimdeploy found no prunable channel group, or the analysis itself raised."),
]

# Why a model family needed the fallback (first-note text → explanation). Matched on model name.
FALLBACK_WHY = [
    (r"^shufflenet", "ShuffleNetV2's channel shuffle (view → transpose → view across the two branches) "
                     "makes torch-pruning's index mapping divide by zero (ZeroDivisionError), so the "
                     "model is analysed per stage/branch: only widths inside each branch are offered, "
                     "the shuffled stage outputs keep their width."),
    (r"^swin", "Swin's shifted-window attention reshapes channels together with window positions; "
               "torch-pruning's whole-model analysis of it fails or explodes, so it is analysed "
               "block by block and only the MLP hidden widths (and what is local to a block) are offered."),
    (r"^maxvit", "MaxViT's block/grid partitions reshape channels with spatial positions; plain "
                 "torch-pruning's dependency analysis of the whole model grew past 24 GB on this "
                 "machine, so slimdeploy bounds it and analyses the parts separately."),
]


def _classify(failure: dict) -> str:
    for key, stage_re, reason_re, _ in FAILURE_CLASSES:
        if re.search(stage_re, failure["stage"]) and re.search(reason_re, failure["reason"]):
            return key
    return "other"


def _fmt_params(n) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f}M"


def _fmt_err(r: dict) -> str:
    errs = [r.get(label, {}).get("parity", {}).get("max_abs_error") for label in ("0.5", "random")]
    errs = [e for e in errs if e is not None]
    if not errs:
        return "–"
    vals = [float(e) if not isinstance(e, str) else float(e) for e in errs]
    return f"{max(vals):.1e}"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[dict], total_s: float, meta: dict) -> str:
    rows = sorted(rows, key=lambda r: r["model"])
    n_pass = sum(passed(r) for r in rows)
    lines = [
        f"**{n_pass} of {len(rows)} models pass** (every torchvision classifier under "
        f"{MAX_PARAMS // 1_000_000}M parameters, random init; total run time {total_s / 60:.1f} min, "
        f"one child process per model, memory cap {meta.get('memory_gb', '?'):g} GB, timeout "
        f"{meta.get('timeout_s', 0) / 60:g} min).",
        "",
        "A model passes when pruning to uniform 0.5 and to `random:0` both give exactly the requested "
        "width in every group (checked by analysing the pruned model again), the parameter count drops, "
        "the forward keeps its output shape, both ONNX exports pass the parity gate (`verify_onnx`: "
        "atol 1e-4 + rtol 1e-3, top-1 agreement 100 %, 2 photos + 2 random inputs), and the 0.5 model "
        "saved and loaded back gives bit-identical outputs. *Scopes* is the number of parts analysed "
        "separately (1 = the whole model at once); *err* is the larger max abs parity error of the two "
        "exports; *time* is the child's wall time.",
        "",
        "| model | input | params | groups | scopes | params @0.5 | params @random | err | time | result |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        size = r.get("input", [0, 0, 0, 0])[-1]
        if passed(r):
            result = "pass"
        else:
            f = r["failures"][0]
            more = f" (+{len(r['failures']) - 1} more)" if len(r["failures"]) > 1 else ""
            result = f"**fail** at {f['stage']}: {_md_escape(f['reason'][:160])}{more}"
        scopes = r.get("scopes", "–")
        if r.get("notes"):
            scopes = f"{scopes}*"
        lines.append(
            f"| {r['model']} | {size}² | {_fmt_params(r.get('params'))} | {r.get('groups', '–')} | {scopes} | "
            f"{_fmt_params(r.get('0.5', {}).get('params'))} | {_fmt_params(r.get('random', {}).get('params'))} | "
            f"{_fmt_err(r)} | {r.get('wall_s', 0):.0f} s | {result} |")
    lines += ["", "\\* needed the fallback (see below)."]
    if meta.get("skipped"):
        lines += ["", f"Not run (over {MAX_PARAMS // 1_000_000}M parameters): {', '.join(meta['skipped'])}."]

    failed = [r for r in rows if not passed(r)]
    if failed:
        lines += ["", "### Failures", ""]
        by_class: dict[str, list[dict]] = {}
        for r in failed:
            by_class.setdefault(_classify(r["failures"][0]), []).append(r)
        explain = {key: text for key, _, _, text in FAILURE_CLASSES}
        for key, members in by_class.items():
            names = ", ".join(r["model"] for r in members)
            text = WHY_FAILURE.get(key, explain.get(key, "Unclassified failure; see the reason in the table."))
            lines.append(f"- **{key}** ({names}): {text}")
    fallback = [r for r in rows if r.get("notes")]
    if fallback:
        lines += ["", "### Models that needed the fallback", "",
                  "slimdeploy analyses the whole model first; when torch-pruning raises, exceeds the "
                  "memory/time bound, or the trial prune breaks the model, it analyses the scope's "
                  "children separately with their boundary widths fixed. Fewer widths are offered then. "
                  "The first note of each model:", ""]
        for r in fallback:
            why = next((text for pat, text in FALLBACK_WHY if re.search(pat, r["model"])), "")
            lines.append(f"- **{r['model']}** ({len(r['notes'])} note(s), {r.get('scopes', '?')} scopes): "
                         f"`{_md_escape(r['notes'][0][:220])}`" + (f" — {why}" if why else ""))
    return "\n".join(lines) + "\n"


# Filled in from what the full run showed: why each failure class happens (construct, reason).
WHY_FAILURE: dict[str, str] = {}


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated subset (default: every classifier under 100M params)")
    p.add_argument("--jobs", type=int, default=1, help="children at a time (default 1: the machine is shared)")
    p.add_argument("--memory-gb", type=float, default=14.0, help="address-space cap of each child (RLIMIT_AS)")
    p.add_argument("--timeout", type=float, default=900.0, help="wall-clock limit of each child in seconds")
    p.add_argument("--logs", help="folder for per-model logs and JSON (default: a new temp folder)")
    p.add_argument("--json", help="also write all rows to this JSON file")
    p.add_argument("--from-json", help="render RESULTS.md from a JSON file written by --json; run nothing")
    p.add_argument("--write", action="store_true", help="write RESULTS.md also for a --models subset")
    p.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.one:
        return run_one(args.one, args.size or input_size(args.one), Path(args.result))

    command = "python benchmarks/zoo.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        markdown = render(data["rows"], data["total_s"], data["meta"])
        print(markdown)
        if not args.no_write:
            sys.path.insert(0, str(HERE))
            from results import write_section
            write_section(SECTION, markdown, data["meta"].get("command", command))
        return 0

    t_start = time.monotonic()
    everything = zoo_models()
    small = [n for n, k in everything if k < MAX_PARAMS]
    if args.models:
        wanted = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in dict(everything)]
        if unknown:
            p.error(f"unknown model(s): {', '.join(unknown)}")
        names = wanted
    else:
        names = small
    skipped = sorted(set(dict(everything)) - set(small))
    logdir = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="slimdeploy-zoo-"))
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"{len(names)} models; logs in {logdir}; over {MAX_PARAMS // 1_000_000}M params, skipped: "
          f"{', '.join(skipped)}", flush=True)

    rows: list[dict] = []

    def one(name):
        return run_child(name, logdir, args.memory_gb, args.timeout)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(one, n): n for n in names}
        for i, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            r = fut.result()
            rows.append(r)
            status = "PASS" if passed(r) else f"FAIL at {r['failures'][0]['stage']}: {r['failures'][0]['reason']}"
            note = f" [fallback: {len(r['notes'])} notes, {r.get('scopes')} scopes]" if r.get("notes") else ""
            print(f"[{i}/{len(names)}] {r['model']} {r.get('wall_s', 0):.0f} s {status}{note}", flush=True)

    total_s = time.monotonic() - t_start
    meta = {"command": command, "memory_gb": args.memory_gb, "timeout_s": args.timeout, "skipped": skipped}
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "total_s": total_s, "meta": meta}, indent=1))
    markdown = render(rows, total_s, meta)
    n_pass = sum(passed(r) for r in rows)
    print(f"\n{n_pass} of {len(rows)} pass in {total_s / 60:.1f} min", flush=True)
    if not args.no_write and (not args.models or args.write):
        sys.path.insert(0, str(HERE))
        from results import write_section
        path = write_section(SECTION, markdown, command)
        print(f"wrote the {SECTION!r} section of {path}")
    else:
        print(markdown)
    return 0 if n_pass == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
