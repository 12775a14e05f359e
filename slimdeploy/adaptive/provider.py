"""The adaptive-width network as the pipeline's shared weights: loaded, resumed, or trained here.

Training settings come from the train options (`supernet_epochs`, `supernet_lr`, `batch_size`,
`seed`: the shared-weight training budget every method gets) and the method's own options
(`--search-option quantile=0.9`, ...). With a work directory (`slimdeploy search --out`), the
training checkpoints there and a rerun with --resume continues it; a directory given as
`--supernet DIR` that holds a finished adaptive-width network is loaded instead of training.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import SlimdeployError
from .network import AdaptiveWidth
from .store import finished, holds_run, load_adaptive
from .training import AdaptiveTraining, train_adaptive


def provide(context) -> AdaptiveWidth:
    """An `AdaptiveWidth` trained (with distillation from `context.model`) for the pipeline's model."""
    t, s = context.options.train, context.options.search
    if t.supernet:
        return _loaded(Path(t.supernet), context)
    workdir = context.workdir
    if workdir is not None and finished(workdir):
        return _loaded(Path(workdir), context)
    config = AdaptiveTraining.from_settings(s.search_options, epochs=t.supernet_epochs, lr=t.supernet_lr,
                                            batch_size=t.batch_size, seed=t.seed)
    config.check()
    net = AdaptiveWidth(context.model, context.example, context.analysis,
                        importance=s.importance if s.importance != "taylor" else "l2", align=s.align,
                        min_fraction=s.min_fraction, quantile=config.quantile, init_width=config.init_width)
    context.say(f"training adaptive widths for {config.epochs} epoch(s) on {context.data['info']['name']} "
                f"(distillation weight {config.teacher_weight} from the original)")
    resume = workdir is not None and holds_run(workdir)
    train_adaptive(net, context.data["train_set"], config, out=workdir, resume=resume, teacher=context.model,
                   say=context.say)
    learned = net.learned_widths()
    context.say(f"learned widths: {net.width_fraction():.1%} of the channels ("
                + ", ".join(f"{name} {w}/{net.space.group(name).width}" for name, w in list(learned.items())[:6])
                + (" ..." if len(learned) > 6 else "") + ")")
    return net


def _loaded(directory: Path, context) -> AdaptiveWidth:
    if not finished(directory):
        raise SlimdeployError(f"{directory} holds no finished adaptive-width network (adaptive.json); train one "
                              f"with `slimdeploy search MODEL --method adaptive --out DIR`")
    net = load_adaptive(directory)
    if net.space.fingerprint != context.analysis.space.fingerprint:
        raise SlimdeployError(f"the adaptive-width network in {directory} was trained for structure "
                              f"{net.space.fingerprint}, this model is {context.analysis.space.fingerprint}")
    return net
