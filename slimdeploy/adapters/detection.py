"""torchvision detection models: analyse and export the part before the post-processing.

In eval mode a detection model returns, per image, boxes, scores and labels after anchor
decoding, score thresholds and non-maximum suppression: index arithmetic torch-pruning cannot
trace (analysing the whole model ran past the 60 s bound and fell back to the backbone alone)
and outputs whose count varies. The *trunk* is the model up to its heads' raw outputs, built
from the model's own modules (same names, same objects): image normalization, backbone (with
FPN), and the heads. It does not resize: it takes images at the size they are given (the model's
own transform scales them to `min_size`, 800 px for the ResNet-50 FPN models, which made their
analysis run past the 60 s bound on 2 cores); export at the size you deploy. The analysis traces
the trunk, so backbone, neck and heads are pruned; the pruned model keeps its post-processing
and still returns detections.

Where the exported ONNX graph stops:
- RetinaNet, FCOS, SSD, SSDlite: at the heads' convolution outputs per feature level (class
  logits, box regression and, for FCOS, centerness, shaped (N, anchors x values, H, W)), before
  the reshape to one row per anchor, box decoding and NMS.
- Faster R-CNN: at the RPN head's outputs (objectness and box deltas per level), before proposal
  decoding and NMS. The analysis view also runs the RoI box head on the model's own proposals
  (computed inside, without gradient), so its layers (fc6, fc7, predictors) are pruned too, but
  they are not in the exported graph: they consume the proposals NMS selects.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn

from .base import view

ONE_STAGE = ("torchvision.models.detection.retinanet.RetinaNet", "torchvision.models.detection.fcos.FCOS",
             "torchvision.models.detection.ssd.SSD")
TWO_STAGE = ("torchvision.models.detection.faster_rcnn.FasterRCNN",)


class Trunk(nn.Module):
    """A detection model's modules up to its heads' raw outputs (see the module docstring)."""

    def __init__(self, model: nn.Module, second_stage: bool):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self.second_stage = second_stage
        self.train(model.training)

    def _features(self, x: torch.Tensor):
        from torchvision.models.detection.image_list import ImageList

        images = ImageList(self.transform.normalize(x), [tuple(x.shape[-2:])] * x.shape[0])
        features = self.backbone(images.tensors)
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        return images, features

    def forward(self, x: torch.Tensor):
        images, features = self._features(x)
        levels = list(features.values())
        if not hasattr(self, "rpn"):
            return _one_stage_heads(self.head, levels)
        objectness, deltas = self.rpn.head(levels)
        out = {"objectness": objectness, "box_deltas": deltas}
        if self.second_stage:
            out.update(self._box_head(images, features, levels, objectness, deltas))
        return out

    def _box_head(self, images, features, levels, objectness, deltas) -> dict:
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        with torch.no_grad():  # proposals are the model's own selection; no channel flows through them
            anchors = self.rpn.anchor_generator(images, levels)
            per_level = [o[0].numel() for o in objectness]
            flat_objectness, flat_deltas = concat_box_prediction_layers(objectness, deltas)
            proposals = self.rpn.box_coder.decode(flat_deltas.detach(), anchors).view(len(anchors), -1, 4)
            boxes, _ = self.rpn.filter_proposals(proposals, flat_objectness.detach(), images.image_sizes, per_level)
        pooled = self.roi_heads.box_roi_pool(features, boxes, images.image_sizes)
        class_logits, box_regression = self.roi_heads.box_predictor(self.roi_heads.box_head(pooled))
        return {"class_logits": class_logits, "box_regression": box_regression}


def _one_stage_heads(head: nn.Module, levels: list) -> dict:
    """The heads' convolution outputs per level, (N, anchors x values, H, W), before the layout change
    to (N, H x W x anchors, values) and the concatenation of levels (reshapes torch-pruning traces slowly)."""
    cls, reg = head.classification_head, head.regression_head
    if hasattr(cls, "module_list"):  # SSD, SSDlite: one convolution stack per level
        return {"cls_logits": [m(f) for m, f in zip(cls.module_list, levels)],
                "bbox_regression": [m(f) for m, f in zip(reg.module_list, levels)]}
    out = {"cls_logits": [cls.cls_logits(cls.conv(f)) for f in levels]}
    reg_features = [reg.conv(f) for f in levels]
    if hasattr(reg, "bbox_ctrness"):  # FCOS
        out["bbox_regression"] = [torch.relu(reg.bbox_reg(f)) for f in reg_features]
        out["bbox_ctrness"] = [reg.bbox_ctrness(f) for f in reg_features]
    else:  # RetinaNet
        out["bbox_regression"] = [reg.bbox_reg(f) for f in reg_features]
    return out


def _analysis_trunk(model: nn.Module) -> nn.Module:
    return Trunk(model, second_stage=True)


def _export_trunk(model: nn.Module) -> nn.Module:
    return Trunk(model, second_stage=False)


for _path in ONE_STAGE:
    view(_path, analysis=_analysis_trunk, export=_export_trunk,
         note="the ONNX graph stops at the heads' convolution outputs per feature level, before the reshape to "
              "one row per anchor, box decoding and non-maximum suppression (slimdeploy.adapters.detection)")
for _path in TWO_STAGE:
    view(_path, analysis=_analysis_trunk, export=_export_trunk,
         note="the ONNX graph stops at the RPN head's outputs per feature level, before proposal decoding, "
              "non-maximum suppression and the RoI box head (slimdeploy.adapters.detection)")
