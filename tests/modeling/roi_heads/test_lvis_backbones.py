"""The R-101 and X-101-32x8d LVIS configs build Detectron2's ResNet-101 / ResNeXt-101 32x8d
(checked against torchvision's architectures, layer by layer) and name Detectron2's ImageNet
weights with its conventions for them; every LVIS DisAlign config's stage 1 is instance-balanced
unless it is named *_rfs."""
import glob
import os

import pytest
import torch
import torchvision

from conftest import REPO
from longtailseg import add_longtailseg_config

from detectron2.config import get_cfg
from detectron2.modeling import build_backbone

BACKBONES = {
    "R_101": ("detectron2://ImageNetPretrained/MSRA/R-101.pkl", torchvision.models.resnet101),
    "X_101_32x8d": ("detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl", torchvision.models.resnext101_32x8d),
}


def _load(path):
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, path))
    return cfg


def _conv_shapes(module):
    return sorted(tuple(m.weight.shape) for m in module.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_backbone_is_the_published_architecture_with_detectron2s_weights(backbone):
    weights, torchvision_model = BACKBONES[backbone]
    configs = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "lvis*", f"*_{backbone}_FPN_*.yaml"))}
    assert {c.split("/")[1] for c in configs} == {"lvis", "lvis_v0.5"}
    assert {os.path.basename(c).split(f"_{backbone}")[0] for c in configs} == {"mask_rcnn", "cascade_mask_rcnn"}
    cfg = _load(sorted(configs)[0])
    if "disalign" in cfg.OUTPUT_DIR:
        cfg = _load(cfg.MODEL.LONG_TAIL.DISALIGN.STAGE1_CONFIG)
    assert cfg.MODEL.WEIGHTS == weights
    if backbone.startswith("X"):  # FAIR's Caffe2 ResNeXt: Detectron2's X-101 conventions
        assert cfg.MODEL.PIXEL_STD == [57.375, 57.120, 58.395] and not cfg.MODEL.RESNETS.STRIDE_IN_1X1
        assert cfg.INPUT.FORMAT == "BGR" and cfg.MODEL.PIXEL_MEAN == [103.530, 116.280, 123.675]
    else:  # MSRA's Caffe R-101
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.MODEL.PIXEL_STD == [1.0, 1.0, 1.0]
    cfg.MODEL.DEVICE = "cpu"
    bottom_up = build_backbone(cfg).bottom_up
    reference = torchvision_model(weights=None)
    reference.fc = torch.nn.Identity()
    assert _conv_shapes(bottom_up) == _conv_shapes(reference)


def test_disalign_configs_name_an_instance_balanced_stage1_unless_rfs():
    paths = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "lvis*", "*disalign*.yaml")))
    assert len(paths) >= 2 * 2 * 3 * 2  # datasets x architectures x backbones x (plain, cosine)
    for path in paths:
        cfg = _load(path)
        stage1 = _load(cfg.MODEL.LONG_TAIL.DISALIGN.STAGE1_CONFIG)
        rfs = stage1.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler"
        assert rfs == ("_rfs" in path or "from_d2_zoo" in path), path
        assert rfs == cfg.MODEL.LONG_TAIL.DISALIGN.STAGE1_CONFIG.endswith("_rfs.yaml"), path
        assert cfg.DATALOADER.SAMPLER_TRAIN == "TrainingSampler"  # stage 2 samples uniformly
