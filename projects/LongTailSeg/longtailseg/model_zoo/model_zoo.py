"""The shipped configs and their checkpoints, as ``detectron2.model_zoo`` offers Detectron2's.

Configs are named by their path under ``configs/`` (``"ade20k/disalign_deeplab.yaml"``). An
installed package holds them in ``longtailseg/model_zoo/configs`` (setup.py puts them there);
a clone reads the repository's ``configs/`` folder. MODEL_ZOO.md lists every entry.

Checkpoints: a config whose trained model is published names its URL in ``PUBLISHED_CHECKPOINTS``;
every other config's checkpoint is the ``model_final.pth`` that ``tools/train_net.py`` writes to
its OUTPUT_DIR (relative to the folder training ran in).
"""
import glob
import os

from ..errors import ConfigError

from ..engine.weights import DETECTRON2_DOWNLOAD_PREFIX, download_cache_path, ensure_weights_available  # noqa: F401

# Detectron2's model zoo, LVIS v0.5 Mask R-CNN R-50-FPN 1x (box AP 23.6, mask AP 24.4 there):
# the architecture and recipe (repeat-factor sampling) of lvis_v0.5/mask_rcnn_R_50_FPN_baseline_rfs.yaml, whose
# LongTailStandardROIHeads with default keys are Detectron2's StandardROIHeads.
DETECTRON2_LVIS_V0_5_R50_FPN = (
    "detectron2://LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/144219072/model_final_571f7c.pkl"
)
PUBLISHED_CHECKPOINTS = {
    "lvis_v0.5/mask_rcnn_R_50_FPN_baseline_rfs.yaml": DETECTRON2_LVIS_V0_5_R50_FPN,
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
    """The trained checkpoint of a config: its published URL, else OUTPUT_DIR/model_final.pth."""
    path = _normalise(config_path)
    if path in PUBLISHED_CHECKPOINTS:
        return PUBLISHED_CHECKPOINTS[path]
    return os.path.join(get_config(path).OUTPUT_DIR, "model_final.pth")


def get_config(config_path, trained=False):
    """The config (a yacs CfgNode with LongTailSeg's keys); with ``trained``, MODEL.WEIGHTS is the
    entry's checkpoint (``get_checkpoint_url``), else the weights the config starts from. Read
    with ``yaml.safe_load`` (``safe_files.merge_config_file``), never Detectron2's unsafe fallback."""
    from detectron2.config import get_cfg

    from ..config import add_longtailseg_config
    from ..safe_files import merge_config_file

    cfg = get_cfg()
    add_longtailseg_config(cfg)
    merge_config_file(cfg, get_config_file(config_path))
    if trained:
        cfg.MODEL.WEIGHTS = get_checkpoint_url(config_path)
    return cfg


def get(config_path, trained=False, device=None):
    """A model built from a shipped config with MODEL.WEIGHTS loaded (the trained checkpoint
    with ``trained``), in training mode as Detectron2's ``model_zoo.get`` returns it.

    Built by ``longtailseg.engine.build_model``, as tools/train_net.py builds it: class statistics
    resolved (the ``class_stats.json`` beside a local checkpoint, else the training split's count
    in OUTPUT_DIR), a second-stage config frozen (``engine/stage2.py``); a trained checkpoint that
    does not fit the model is refused, the weights a config starts from are loaded as the
    trainer loads them.
    """
    import torch

    from ..engine import build_model

    cfg = get_config(config_path, trained=trained)
    if device is not None:
        cfg.MODEL.DEVICE = device
    elif not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    weights = cfg.MODEL.WEIGHTS
    if trained and "://" not in weights and not os.path.isfile(weights):
        raise ConfigError(
            f"{config_path} has no published checkpoint and {weights} does not exist; train it with "
            f"`python tools/train_net.py --config-file configs/{_normalise(config_path)}` "
            "(run from the folder that holds output/)"
        )
    ensure_weights_available(cfg)
    return build_model(cfg, weights="trained" if trained else "pretrained")
