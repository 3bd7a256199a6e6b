"""longtailseg.model_zoo: every shipped config by name, from a clone and from an installed wheel;
checkpoints per entry; the second stage on Detectron2's LVIS v0.5 Mask R-CNN checkpoint, and the
error that names the file to fetch when it cannot be downloaded."""
import glob
import os
import pickle
import shutil
import subprocess
import sys
import zipfile

import pytest
import torch

from conftest import REPO, run_tool
from longtailseg import model_zoo
from longtailseg.engine.checkpoint import LongTailCheckpointer
from longtailseg.engine.stage2 import prepare_stage2_model
from longtailseg.errors import ConfigError
from longtailseg.longtail import class_stats as cs

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

SHIPPED = sorted(
    os.path.relpath(p, os.path.join(REPO, "configs"))
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)
ZOO_STAGE2 = "lvis_v0.5/mask_rcnn_R_50_FPN_disalign_from_d2_zoo.yaml"
D2_URL = ("detectron2://LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/144219072/"
          "model_final_571f7c.pkl")
CALIBRATION_KEYS = {f"roi_heads.box_predictor.long_tail.calibration.{k}"
                    for k in ("alpha", "beta", "confidence.weight", "confidence.bias")}


def test_every_shipped_config_is_listed_and_found():
    assert model_zoo.list_configs() == SHIPPED
    for path in SHIPPED:
        assert model_zoo.get_config_file(path) == os.path.join(model_zoo.config_root(), path)
        assert model_zoo.get_config_file("configs/" + path) == model_zoo.get_config_file(path)


def test_model_zoo_md_lists_every_shipped_config():
    with open(os.path.join(REPO, "MODEL_ZOO.md")) as f:
        text = f.read()
    missing = [path for path in SHIPPED if f"configs/{path}" not in text]
    assert not missing


@pytest.mark.parametrize("path", ["ade20k/nothing.yaml", "Base-MaskRCNN-FPN.yaml"])
def test_unknown_config_is_a_config_error(path):
    with pytest.raises(ConfigError, match="not a shipped LongTailSeg config.*MODEL_ZOO.md"):
        model_zoo.get_config_file(path)


def test_checkpoints_are_published_or_named_by_the_caller():
    assert model_zoo.get_checkpoint_url("lvis_v0.5/mask_rcnn_R_50_FPN_baseline_rfs.yaml") == D2_URL
    with pytest.raises(ConfigError, match="no published checkpoint.*checkpoint='.../model_final.pth'"):
        model_zoo.get_checkpoint_url("ade20k/disalign_deeplab.yaml")
    cfg = model_zoo.get_config("lvis_v0.5/mask_rcnn_R_50_FPN_baseline_rfs.yaml", trained=True)
    assert cfg.MODEL.WEIGHTS == D2_URL and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1230
    cfg = model_zoo.get_config("ade20k/disalign_deeplab.yaml", trained=True, checkpoint="https://x/y.pth")
    assert cfg.MODEL.WEIGHTS == "https://x/y.pth"
    with pytest.raises(ConfigError, match="pass trained=True"):
        model_zoo.get_config("ade20k/disalign_deeplab.yaml", checkpoint="https://x/y.pth")
    # the second stage on Detectron2's model starts from exactly the baseline entry's checkpoint
    assert model_zoo.get_config(ZOO_STAGE2).MODEL.WEIGHTS == D2_URL
    assert all(isinstance(c, model_zoo.PublishedCheckpoint) for c in model_zoo.PUBLISHED_CHECKPOINTS.values())


def test_get_loads_a_trained_checkpoint_from_any_folder_and_writes_nothing_there(
        trained_baseline, datasets_root, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ConfigError, match="no published checkpoint"):
        model_zoo.get("synthetic/deeplab_v3_plus.yaml", trained=True)
    with pytest.raises(ConfigError, match="checkpoint .*missing.pth does not exist"):
        model_zoo.get("synthetic/deeplab_v3_plus.yaml", trained=True, checkpoint=str(tmp_path / "missing.pth"))
    model = model_zoo.get("synthetic/deeplab_v3_plus.yaml", trained=True,
                          checkpoint=str(trained_baseline / "model_final.pth"))
    saved = torch.load(trained_baseline / "model_final.pth", map_location="cpu")["model"]
    for name, value in model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert os.listdir(elsewhere) == []  # no ./output, no class_stats.json


def test_a_published_checkpoint_is_checked_against_its_md5(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"weights")
    model_zoo.check_md5(str(path), "63f4f1e9")  # md5(b"weights") starts so
    with pytest.raises(ConfigError, match="has md5 63f4f1e9.*download it again"):
        model_zoo.check_md5(str(path), "0123abcd")


def test_configs_are_found_in_an_installed_wheel(tmp_path):
    """A wheel built from the sources carries the configs; installed elsewhere, without the
    clone on the path, the model zoo reads them from the package."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(os.path.join(REPO, "setup.py"), source)
    for folder in ("configs", "projects"):
        shutil.copytree(os.path.join(REPO, folder), source / folder, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("longtailseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"longtailseg/model_zoo/configs/{p}" for p in SHIPPED} <= set(names)
    assert "longtailseg/model_zoo/configs/Base-MaskRCNN-FPN.yaml" in names  # _BASE_ targets too
    assert "longtailseg/data/class_stats_files/lvis_v1_train.json" in names  # published statistics
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    probe = ("from longtailseg import model_zoo; "
             "print(model_zoo.config_root()); "
             "print(model_zoo.get_config('lvis_v0.5/mask_rcnn_R_50_FPN_disalign.yaml').SOLVER.MAX_ITER)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(site)), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    root, max_iter = out.stdout.split()
    assert root == str(site / "longtailseg" / "model_zoo" / "configs") and max_iter == "4500"


# ---- DisAlign stage 2 on Detectron2's LVIS v0.5 checkpoint -----------------------------------

def _detectron2_lvis_v05_mask_rcnn_cfg():
    """Detectron2's own LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x (over its
    Base-RCNN-FPN.yaml): the architecture of the published checkpoint."""
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.META_ARCHITECTURE", "GeneralizedRCNN", "MODEL.MASK_ON", "True",
        "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone", "MODEL.RESNETS.DEPTH", "50",
        "MODEL.RESNETS.OUT_FEATURES", "['res2', 'res3', 'res4', 'res5']",
        "MODEL.FPN.IN_FEATURES", "['res2', 'res3', 'res4', 'res5']",
        "MODEL.ANCHOR_GENERATOR.SIZES", "[[32], [64], [128], [256], [512]]",
        "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0, 2.0]]",
        "MODEL.RPN.IN_FEATURES", "['p2', 'p3', 'p4', 'p5', 'p6']",
        "MODEL.ROI_HEADS.NAME", "StandardROIHeads", "MODEL.ROI_HEADS.NUM_CLASSES", "1230",
        "MODEL.ROI_HEADS.IN_FEATURES", "['p2', 'p3', 'p4', 'p5']",
        "MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead", "MODEL.ROI_BOX_HEAD.NUM_FC", "2",
        "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "7",
        "MODEL.ROI_MASK_HEAD.NAME", "MaskRCNNConvUpsampleHead", "MODEL.ROI_MASK_HEAD.NUM_CONV", "4",
        "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", "14",
    ])
    return cfg


@pytest.fixture(scope="module")
def detectron2_checkpoints(tmp_path_factory):
    """A Detectron2 LVIS v0.5 Mask R-CNN R-50-FPN saved as its model zoo's .pkl (numpy arrays
    under "model", with "__author__") and as DetectionCheckpointer's .pth."""
    folder = tmp_path_factory.mktemp("d2_lvis_v05")
    torch.manual_seed(0)
    model = build_model(_detectron2_lvis_v05_mask_rcnn_cfg())
    assert type(model.roi_heads).__name__ == "StandardROIHeads"
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    with open(folder / "model_final_571f7c.pkl", "wb") as f:
        pickle.dump({"model": state, "__author__": "Detectron2 Model Zoo"}, f)
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_final")
    return [folder / "model_final_571f7c.pkl", folder / "model_final.pth"]


def _lvis_v05_stats(path):
    """Class statistics with LVIS v0.5's category names (what a stage 2 counts on lvis_v0.5_train)."""
    names = list(MetadataCatalog.get("lvis_v0.5_train").thing_classes)
    ids = list(range(len(names)))
    stats = cs.ClassStats(dataset="lvis_v0.5_train", task="instances", class_names=names,
                          counts=[1 + i % 50 for i in ids], image_counts=[1] * len(names),
                          groups={"head": ids[:400], "body": ids[400:800], "tail": ids[800:]},
                          group_rule="test", num_images=1)
    cs.save(stats, str(path))
    return str(path)


def test_detectron2_lvis_v05_checkpoint_loads_into_stage2_with_only_calibration_missing(
        detectron2_checkpoints, tmp_path):
    cfg = model_zoo.get_config(ZOO_STAGE2)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.LONG_TAIL.CLASS_STATS", _lvis_v05_stats(tmp_path / "s.json")])
    stage2 = prepare_stage2_model(build_model(cfg))
    baseline_cfg = model_zoo.get_config("lvis_v0.5/mask_rcnn_R_50_FPN_baseline_rfs.yaml")
    baseline_cfg.MODEL.DEVICE = "cpu"
    baseline = build_model(baseline_cfg)
    for path in detectron2_checkpoints:
        keys = _incompatible_keys(stage2, path)
        assert set(keys.missing_keys) == CALIBRATION_KEYS, path
        assert not keys.unexpected_keys and not keys.incorrect_shapes, path
        keys = _incompatible_keys(baseline, path)  # the baseline entry is that model
        assert not keys.missing_keys and not keys.unexpected_keys and not keys.incorrect_shapes


def _incompatible_keys(model, path):
    checkpointer = LongTailCheckpointer(model)
    checkpointer.load(str(path))
    return checkpointer.last_incompatible


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network (every download goes to a closed local port) and an empty download cache."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_weights_that_cannot_be_downloaded_name_the_file_and_where_to_put_it(offline, tmp_path):
    cfg = model_zoo.get_config(ZOO_STAGE2)
    expected = offline / "detectron2/LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/144219072/model_final_571f7c.pkl"
    with pytest.raises(ConfigError) as error:
        model_zoo.ensure_weights_available(cfg)
    message = str(error.value)
    assert "\n" not in message
    assert D2_URL in message and str(expected) in message
    assert "https://dl.fbaipublicfiles.com/detectron2/LVISv0.5-InstanceSegmentation/" in message
    # put there, the file is used without any download
    expected.parent.mkdir(parents=True, exist_ok=True)
    assert not expected.exists()  # a failed download leaves no partial file behind
    expected.write_bytes(b"weights")
    assert model_zoo.ensure_weights_available(cfg) == str(expected)


def test_train_net_offline_is_a_one_line_error(offline, tmp_path):
    proc = run_tool("train_net.py", "--config-file", f"configs/{ZOO_STAGE2}", "OUTPUT_DIR", tmp_path / "out",
                    check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot download MODEL.WEIGHTS" in lines[0]
    assert str(offline / "detectron2/LVISv0.5-InstanceSegmentation") in lines[0]
