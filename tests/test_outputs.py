import torch

from slimdeploy.outputs import named_tensors, tensors


def test_nested_outputs_are_named_by_their_place():
    a, b, c = torch.zeros(1), torch.ones(2), torch.arange(3)
    output = [{"boxes": a, "scores": b, "extra": "not a tensor"}, (c,)]
    assert [name for name, _ in named_tensors(output)] == ["output.0.boxes", "output.0.scores", "output.1.0"]
    assert named_tensors(a) == [("output", a)]
    assert [t.shape for t in tensors({"out": b, "aux": [a, c]})] == [(2,), (1,), (3,)]
    assert named_tensors(None) == [] and named_tensors("text") == []
