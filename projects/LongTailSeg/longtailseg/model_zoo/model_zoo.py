"""The shipped configs and their checkpoints, as ``detectron2.model_zoo`` offers Detectron2's.

Configs are named by their path under ``configs/`` (``"ade20k/disalign_deeplab.yaml"``). An
installed package holds them in ``longtailseg/model_zoo/configs`` (setup.py puts them there);
a clone reads the repository's ``configs/`` folder. MODEL_ZOO.md lists every entry.

Checkpoints: a config whose trained model is published has an entry in ``PUBLISHED_CHECKPOINTS``
(URL and md5, as Detectron2's zoo names its files); publishing one is one line there. For every
other config, ``get(..., trained=True, checkpoint=PATH_OR_URL)`` names the checkpoint (e.g. the
``model_final.pth`` that ``tools/train_net.py`` wrote). Nothing here reads or writes the current
folder: class statistics come from the file beside the checkpoint, the statistics shipped for a
real dataset (``longtailseg/data/published_stats.py``) or a count kept in a temporary folder.
"""
import glob
import hashlib
import os
import tempfile
from typing import NamedTuple, Optional

from ..errors import ConfigError

from ..engine.weights import DETECTRON2_DOWNLOAD_PREFIX, download_cache_path, ensure_weights_available  # noqa: F401

# Detectron2's model zoo, LVIS v0.5 Mask R-CNN R-50-FPN 1x (box AP 23.6, mask AP 24.4 there):
# the architecture and recipe (repeat-factor sampling) of lvis_v0.5/mask_rcnn_R_50_FPN_baseline_rfs.yaml, whose
# LongTailStandardROIHeads with default keys are Detectron2's StandardROIHeads.
DETECTRON2_LVIS_V0_5_R50_FPN = (
    "detectron2://LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/144219072/model_final_571f7c.pkl"
)


class PublishedCheckpoint(NamedTuple):
    """A trained checkpoint of a zoo entry: where to download it and, when its publisher gives
    one, the md5 of the file (or its leading hex digits) that a download must match."""

    url: str
    md5: Optional[str] = None


# config path under configs/ -> its published checkpoint. Add a trained model with one line:
#     "ade20k/disalign_deeplab.yaml": PublishedCheckpoint("https://.../model_final.pth", "0123abcd..."),
PUBLISHED_CHECKPOINTS = {
    # Detectron2 publishes no md5 for its zoo files.
    "lvis_v0.5/mask_rcnn_R_50_FPN_baseline_rfs.yaml": PublishedCheckpoint(DETECTRON2_LVIS_V0_5_R50_FPN),
}

_PACKAGED_CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# projects/LongTailSeg/longtailseg/model_zoo -> the repository root of a clone
_CLONE_CONFIGS = os.path.normpath(os.path.join(_PACKAGED_CONFIGS, "..", "..", "..", "..", "..", "configs"))


def config_root():
    """The folder holding the shipped configs: the installed package's copy, else the clone's."""
    for root in (_PACKAGED_CONFIGS, _CLONE_CONFIGS):
        if os.path.isdir(root):
            return root
    raise ConfigError(
        f"LongTailSeg's configs are neither in {_PACKAGED_CONFIGS} nor in {_CLONE_CONFIGS}; "
        "reinstall the package (pip install .) from a clone of the repository"
    )


def list_configs():
    """Every shipped config (``Base-*`` files excluded), as paths under configs/."""
    root = config_root()
    paths = glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True)
    return sorted(os.path.relpath(p, root).replace(os.sep, "/") for p in paths
                  if not os.path.basename(p).startswith("Base-"))


def _normalise(config_path):
    path = config_path.replace(os.sep, "/")
    return path[len("configs/"):] if path.startswith("configs/") else path


def get_config_file(config_path):
    """Absolute path of a shipped config, e.g. ``get_config_file("lvis_v0.5/mask_rcnn_R_50_FPN_disalign.yaml")``."""
    path = _normalise(config_path)
    full = os.path.join(config_root(), path)
    if not os.path.isfile(full) or os.path.basename(path).startswith("Base-"):
        examples = ", ".join(list_configs()[:3])
        raise ConfigError(f"{config_path!r} is not a shipped LongTailSeg config; use a path under "
                          f"configs/ as MODEL_ZOO.md lists them (e.g. {examples})")
    return full


def get_checkpoint_url(config_path):
    """The published checkpoint URL of a zoo entry; a ConfigError when none is published."""
    path = _normalise(config_path)
    get_config_file(path)  # an unknown entry is its own error
    if path not in PUBLISHED_CHECKPOINTS:
        raise ConfigError(
            f"{path} has no published checkpoint; train it (`python tools/train_net.py --config-file "
            f"configs/{path}`) and pass the checkpoint: model_zoo.get({path!r}, trained=True, "
            "checkpoint='.../model_final.pth')"
        )
    return PUBLISHED_CHECKPOINTS[path].url


def get_config(config_path, trained=False, checkpoint=None):
    """The config (a yacs CfgNode with LongTailSeg's keys); with ``trained``, MODEL.WEIGHTS is
    ``checkpoint`` (a path or URL) or else the entry's published checkpoint; otherwise the weights
    the config starts from. Read with ``yaml.safe_load`` (``safe_files.merge_config_file``), never
    Detectron2's unsafe fallback."""
    from detectron2.config import get_cfg

    from ..config import add_longtailseg_config
    from ..safe_files import merge_config_file

    if checkpoint and not trained:
        raise ConfigError("checkpoint= names trained weights; pass trained=True with it")
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    merge_config_file(cfg, get_config_file(config_path))
    if trained:
        cfg.MODEL.WEIGHTS = checkpoint or get_checkpoint_url(config_path)
    return cfg


def check_md5(path, md5):
    """Refuse a downloaded checkpoint whose md5 does not start with the published ``md5``."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(md5.lower()):
        raise ConfigError(f"{path} has md5 {digest.hexdigest()}, the published checkpoint {md5}; the "
                          "download is incomplete or another file: delete it and download it again")


def get(config_path, trained=False, device=None, checkpoint=None):
    """A model built from a shipped config with MODEL.WEIGHTS loaded, in training mode as
    Detectron2's ``model_zoo.get`` returns it. ``trained``: the entry's published checkpoint, or
    ``checkpoint`` (a local path or URL: a model you trained, e.g. OUTPUT_DIR/model_final.pth).

    Built by ``longtailseg.engine.build_model``, as tools/train_net.py builds it: class statistics
    resolved (the ``class_stats.json`` beside a local checkpoint, else the training split counted
    when it is on disk, else the statistics shipped for a real dataset), a second-stage config
    frozen (``engine/stage2.py``); a trained checkpoint that does not fit the model is refused,
    the weights a config starts from are loaded as the trainer loads them. Nothing is written
    into the current folder (statistics resolved here go to a temporary folder).
    """
    import torch

    from ..engine import build_model

    cfg = get_config(config_path, trained=trained, checkpoint=checkpoint)
    if device is not None:
        cfg.MODEL.DEVICE = device
    elif not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    weights = cfg.MODEL.WEIGHTS
    if trained and "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(f"checkpoint {weights} does not exist; pass the model_final.pth that "
                          f"tools/train_net.py wrote for {_normalise(config_path)}")
    local = ensure_weights_available(cfg)
    published = PUBLISHED_CHECKPOINTS.get(_normalise(config_path))
    if trained and not checkpoint and published and published.md5 and local:
        check_md5(local, published.md5)
    with tempfile.TemporaryDirectory(prefix="longtailseg-zoo-") as scratch:
        cfg.OUTPUT_DIR = scratch  # the config's ./output/... would be under the current folder
        return build_model(cfg, weights="trained" if trained else "pretrained")
