"""slimdeploy.train on real data (scikit-learn's 8x8 digits): training, BN recalibration, KD fine-tuning."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from slimdeploy.analysis import analyse
from slimdeploy.data import load_dataset, make_loader
from slimdeploy.errors import SlimdeployError
from slimdeploy.prune import prune
from slimdeploy.train import (
    accuracy,
    distillation_loss,
    estimate_accuracy,
    finetune,
    recalibrate_batchnorm,
    settle_batchnorm,
    train_classifier,
)

EXAMPLE = torch.zeros(1, 1, 8, 8)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_cnn(width: int = 16) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * width * 16, 10))


@pytest.fixture(scope="module")
def digits():
    train, val, _ = load_dataset("digits")
    return make_loader(train, 32, shuffle=True, seed=0), make_loader(val, 128)


@pytest.fixture(scope="module")
def teacher(digits):
    train_loader, val_loader = digits
    torch.manual_seed(0)
    model = small_cnn()
    history = train_classifier(model, train_loader, epochs=3)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    return model, accuracy(model, val_loader)


def half_width(model: nn.Module) -> nn.Module:
    analysis = analyse(model, EXAMPLE)
    widths = analysis.space.uniform(0.5)
    return prune(model, widths, EXAMPLE, analysis=analysis).eval()


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_small_cnn_trained_three_epochs_beats_90_percent(teacher):
    model, val_acc = teacher
    assert val_acc > 0.90
    assert not model.training  # training leaves the model in eval mode


def test_accuracy_restores_mode_and_respects_max_batches(teacher, digits):
    model, _ = teacher
    _, val_loader = digits
    model.train()
    try:
        one = accuracy(model, val_loader, max_batches=1)
        assert model.training and 0.0 <= one <= 1.0
    finally:
        model.eval()
    x, y = next(iter(val_loader))
    assert accuracy(model, [(x, y)]) == one  # a list of batches works like a loader
    with pytest.raises(SlimdeployError):
        accuracy(model, [])


def test_recalibrate_batchnorm_changes_stats_and_restores_momentum_and_mode(teacher, digits):
    train_loader, _ = digits
    model = copy.deepcopy(teacher[0])
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    bns[0].momentum = 0.3
    before = snapshot(model)
    used = recalibrate_batchnorm(model, (x for x, _ in train_loader), max_batches=3)
    assert used == 3
    assert not torch.equal(before["1.running_mean"], model.state_dict()["1.running_mean"])
    assert int(model.state_dict()["1.num_batches_tracked"]) == 3
    assert [m.momentum for m in bns] == [0.3, 0.1]
    assert not model.training and not any(m.training for m in model.modules())
    # weights are untouched; only BN buffers move
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if "running" not in k
               and "num_batches" not in k)

    model.train()
    recalibrate_batchnorm(model, [next(iter(train_loader))], max_batches=5)  # (x, y) batches too
    assert model.training and all(m.training for m in model.modules())
    # nothing usable: stats are left as they were
    state = snapshot(model)
    assert recalibrate_batchnorm(model, [], max_batches=5) == 0
    assert same(state, snapshot(model))


def test_estimate_accuracy_leaves_the_model_alone_and_recovers_a_pruned_one(teacher, digits):
    train_loader, val_loader = digits
    student = half_width(teacher[0])
    before = snapshot(student)
    raw = accuracy(student, val_loader)
    estimated = estimate_accuracy(student, train_loader, val_loader, calib_batches=5, eval_batches=None)
    assert same(before, snapshot(student)) and not student.training
    assert 0.0 <= raw <= 1.0 and 0.0 <= estimated <= 1.0
    assert estimated >= raw - 0.02  # fresh BN stats do not hurt a pruned network


def test_kd_finetune_of_half_width_student_recovers_close_to_teacher(teacher, digits):
    train_loader, val_loader = digits
    model, teacher_acc = teacher
    teacher_state = snapshot(model)
    student = half_width(model)
    assert sum(p.numel() for p in student.parameters()) < 0.5 * sum(p.numel() for p in model.parameters())
    before = accuracy(student, val_loader)
    calls = []
    history = finetune(student, train_loader, epochs=2, teacher=model, progress=calls.append)
    after = accuracy(student, val_loader)
    assert after > before
    assert after > teacher_acc - 0.03
    assert not student.training and not model.training
    assert same(teacher_state, snapshot(model))  # the teacher is only read
    # progress: one call per step, with what a bar needs
    steps = len(train_loader)
    assert len(calls) == 2 * steps == sum(h["batches"] for h in history)
    assert {"epoch", "batch", "batches", "loss"} <= calls[0].keys()
    assert (calls[0]["epoch"], calls[0]["batch"], calls[0]["batches"]) == (1, 1, steps)
    assert (calls[-1]["epoch"], calls[-1]["batch"]) == (2, steps)
    assert [h["epoch"] for h in history] == [1, 2] and all(h["seconds"] > 0 for h in history)
    assert history[0]["lr"] == pytest.approx(0.01) and history[1]["lr"] < history[0]["lr"]
    assert calls[-1]["lr"] < 0.01 * 0.05  # cosine decays to ~0 by the last step


def test_zero_epochs_changes_nothing_and_runs_are_deterministic(teacher, digits):
    train_loader, _ = digits
    student = half_width(teacher[0])
    student.train()
    before = snapshot(student)
    history = finetune(student, train_loader, epochs=0, teacher=teacher[0])
    assert history == []
    assert same(before, snapshot(student)) and student.training

    a, b = half_width(teacher[0]), half_width(teacher[0])
    train, _, _ = load_dataset("digits")
    ha = finetune(a, make_loader(train, 64, shuffle=True, seed=5), 1, max_batches_per_epoch=4, seed=3)
    hb = finetune(b, make_loader(train, 64, shuffle=True, seed=5), 1, max_batches_per_epoch=4, seed=3)
    assert ha[0]["batches"] == 4 and ha[0]["loss"] == hb[0]["loss"]
    assert same(snapshot(a), snapshot(b))


def test_distillation_loss_is_zero_for_identical_logits_and_bad_arguments_are_refused(teacher, digits):
    logits = torch.randn(8, 10)
    assert float(distillation_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, -logits)) > 0
    train_loader, _ = digits
    model = small_cnn(4)
    for kwargs in ({"epochs": -1}, {"epochs": 1, "lr": 0}, {"epochs": 1, "kd_weight": 1.5},
                   {"epochs": 1, "temperature": 0}):
        with pytest.raises(SlimdeployError):
            finetune(model, train_loader, **kwargs)
    with pytest.raises(SlimdeployError, match="diverged"):
        finetune(model, train_loader, 1, lr=1e30, max_batches_per_epoch=3)


def test_training_works_and_restores_mode_when_the_caller_disabled_gradients():
    # A time limit firing inside torch-pruning's no_grad code once left gradients off for the
    # rest of the process, and every later training step failed.
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
    with torch.no_grad():
        history = train_classifier(model, data, epochs=1)
        assert not torch.is_grad_enabled()
    assert history[0]["batches"] == 1


def test_guarded_restores_grad_mode_after_an_interrupted_step():
    from slimdeploy.analysis import guarded
    from slimdeploy.guard import LimitExceeded

    with pytest.raises(LimitExceeded):
        with guarded(seconds=0.05, what="a step"):
            torch.set_grad_enabled(False)
            while True:
                pass
    assert torch.is_grad_enabled()


def test_epoch_batches_repeat_per_seed_resume_mid_epoch_and_shard_across_ranks():
    from slimdeploy.train import EpochBatches

    train, _, _ = load_dataset("digits")
    batches = EpochBatches(train, 100, seed=3)
    first = [b[1] for b in batches.epoch(1)]
    assert len(first) == len(batches) == 15 and all(torch.equal(a, b) for a, b in zip(first, [b[1] for b in
                                                                                             batches.epoch(1)]))
    assert not torch.equal(first[0], next(batches.epoch(2))[1])
    assert all(torch.equal(a, b) for a, b in zip(first[4:], [b[1] for b in batches.epoch(1, start=4)]))
    ranks = [EpochBatches(train, 100, seed=3, rank=r, world_size=2) for r in (0, 1)]
    seen = [set(r.indices(1)) for r in ranks]
    assert len(ranks[0]) == len(ranks[1]) and not seen[0] & seen[1]
    assert seen[0] | seen[1] <= set(batches.indices(1))


def test_a_loop_restored_from_its_state_ends_with_the_weights_of_an_uninterrupted_run():
    import copy as _copy

    from slimdeploy.train import EpochBatches, TrainLoop, classification_step, cosine_schedule, sgd_optimizer

    train, _, _ = load_dataset("digits")
    batches = EpochBatches(train, 64, seed=1)

    def loop_for(model):
        optimizer = sgd_optimizer(model, 0.05)
        return TrainLoop(model, optimizer, classification_step(), batches, 2, cosine_schedule(0.05, 2 * len(batches)),
                         seed=4)

    torch.manual_seed(0)
    start = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.3), nn.ReLU(), nn.Linear(32, 10))
    whole = _copy.deepcopy(start)
    loop_for(whole).run()

    class Stop(Exception):
        pass

    class StopAt:
        def on_step(self, loop, record):
            if loop.state.step == 30:
                loop.capture_rng()
                self.saved = (_copy.deepcopy(loop.model.state_dict()), _copy.deepcopy(loop.optimizer.state_dict()),
                              _copy.deepcopy(loop.state))
                raise Stop

        def on_epoch(self, loop, record):
            pass

        def on_end(self, loop):
            pass

    interrupted = _copy.deepcopy(start)
    first = loop_for(interrupted)
    stopper = StopAt()
    first.hooks.append(stopper)
    rng_before = torch.get_rng_state()
    with pytest.raises(Stop):
        first.run()
    assert torch.equal(rng_before, torch.get_rng_state())  # the caller's RNG is never touched
    weights, optimizer_state, state = stopper.saved
    resumed = _copy.deepcopy(start)
    resumed.load_state_dict(weights)
    second = loop_for(resumed)
    second.optimizer.load_state_dict(optimizer_state)
    second.state = state
    assert (state.epoch, state.batch, state.step) == (1, 7, 30)  # stopped inside the second epoch
    history = second.run()
    assert same(snapshot(whole), snapshot(resumed))
    assert [h["batches"] for h in history] == [23, 23]


def test_settle_batchnorm_re_estimates_statistics_a_short_fine_tuning_left_behind_and_puts_back_worse_ones(
        teacher, digits):
    train_loader, val_loader = digits
    model, _ = teacher
    student = half_width(model)
    for m in student.modules():  # TensorFlow-ported networks (EfficientNet-Lite) train BatchNorm at momentum 0.01
        if isinstance(m, nn.BatchNorm2d):  # statistics of another network: a pruned parent's, shifted
            m.momentum = 0.01
            m.running_mean += m.running_var.sqrt()
            m.running_var *= 4
    finetune(student, train_loader, epochs=1, teacher=model, max_batches_per_epoch=10)
    held_out = list(val_loader)
    trained = accuracy(student, held_out)
    info = settle_batchnorm(student, train_loader, held_out, max_batches=10)
    assert info["batchnorm"] == "re-estimated" and info["held_out_before"] == pytest.approx(trained)
    assert info["held_out_after"] == pytest.approx(accuracy(student, held_out))
    assert info["held_out_after"] > trained + 0.2
    assert not student.training and all(m.momentum == 0.01 for m in student.modules()
                                        if isinstance(m, nn.BatchNorm2d))

    state = snapshot(student)
    shifted = [(x * 5 + 3, y) for (x, y), _ in zip(train_loader, range(5))]  # statistics of other data hurt
    info = settle_batchnorm(student, shifted, held_out)
    assert info["batchnorm"] == "kept" and info["held_out_after"] < info["held_out_before"]
    assert same(state, snapshot(student))
    assert settle_batchnorm(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), train_loader, held_out) is None
