"""Every shipped config loads, and second stages read their first stage's output."""
import glob
import os

import pytest

from longtailseg import add_longtailseg_config, model_zoo

from detectron2.config import get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)


def _load(path):
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, path))
    return cfg


@pytest.mark.parametrize("path", CONFIGS)
def test_config_loads(path):
    cfg = _load(path)
    assert cfg.OUTPUT_DIR.startswith("./output/"), "each recipe writes to its own output folder"


@pytest.mark.parametrize("path", [p for p in CONFIGS if "disalign" in p])
def test_stage2_reads_its_stage1_output(path):
    cfg = _load(path)
    assert cfg.MODEL.LONG_TAIL.DISALIGN.ENABLED
    stage1 = _load(cfg.MODEL.LONG_TAIL.DISALIGN.STAGE1_CONFIG)
    if "://" in cfg.MODEL.WEIGHTS:  # a published checkpoint of the stage-1 config
        assert cfg.MODEL.WEIGHTS == model_zoo.get_checkpoint_url(cfg.MODEL.LONG_TAIL.DISALIGN.STAGE1_CONFIG)
    else:
        assert cfg.MODEL.WEIGHTS == os.path.join(stage1.OUTPUT_DIR, "model_final.pth")
    assert cfg.OUTPUT_DIR != stage1.OUTPUT_DIR
