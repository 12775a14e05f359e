"""The supernet as the pipeline's shared weights: loaded from `--supernet DIR`, or trained here."""
from __future__ import annotations

from ..errors import SlimdeployError
from .core import Supernet
from .store import load_supernet
from .training import SupernetTraining, train_supernet


def provide(context) -> Supernet:
    """A `Supernet` for `context.model` (a `shared_weights.WeightsContext`)."""
    t, s = context.options.train, context.options.search
    if t.supernet:
        supernet = load_supernet(t.supernet)
        if supernet.space.fingerprint != context.analysis.space.fingerprint:
            raise SlimdeployError(f"the supernet in {t.supernet} was trained for structure "
                                  f"{supernet.space.fingerprint}, this model is {context.analysis.space.fingerprint}")
        return supernet
    supernet = Supernet(context.model, context.example, context.analysis,
                        importance=s.importance if s.importance != "taylor" else "l2", align=s.align,
                        min_fraction=s.min_fraction)
    context.say(f"training a supernet for {t.supernet_epochs} epoch(s) on {context.data['info']['name']} "
                f"(sandwich rule, in-place distillation)")
    train_supernet(supernet, context.data["train_set"],
                   SupernetTraining(epochs=t.supernet_epochs, lr=t.supernet_lr, batch_size=t.batch_size, seed=t.seed),
                   say=context.say)
    return supernet
