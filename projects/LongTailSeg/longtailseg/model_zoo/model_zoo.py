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
from urllib.parse import urlparse

from ..errors import ConfigError

# Detectron2's model zoo, LVIS v0.5 Mask R-CNN R-50-FPN 1x (box AP 23.6, mask AP 24.4 there):
# the architecture and recipe of lvis_v0.5/mask_rcnn_R_50_FPN_baseline.yaml, whose
# LongTailStandardROIHeads with default keys are Detectron2's StandardROIHeads.
DETECTRON2_LVIS_V0_5_R50_FPN = (
    "detectron2://LVISv0.5-InstanceSegmentation/mask_rcnn_R_50_FPN_1x/144219072/model_final_571f7c.pkl"
)
PUBLISHED_CHECKPOINTS = {
    "lvis_v0.5/mask_rcnn_R_50_FPN_baseline.yaml": DETECTRON2_LVIS_V0_5_R50_FPN,
}
# Where Detectron2's "detectron2://" paths are downloaded from (detectron2.utils.file_io).
DETECTRON2_DOWNLOAD_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"

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

    Class statistics are resolved as tools/train_net.py resolves them (the ``class_stats.json``
    beside a local checkpoint, else the training split's count in OUTPUT_DIR). A second-stage
    config gives the frozen second-stage model (``engine/stage2.py``).
    """
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    import torch

    from ..data.class_counting import resolve_class_stats
    from ..engine import stage2

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
    resolve_class_stats(cfg)
    model = build_model(cfg)
    if stage2.is_stage2(cfg):
        model = stage2.prepare_stage2_model(model)
    if weights:
        DetectionCheckpointer(model).load(weights)
    return model


def download_cache_path(url):
    """Where Detectron2 (iopath) keeps a downloaded ``url``: it reads the file from there without
    downloading when it is present."""
    from iopath.common.file_io import get_cache_dir

    if url.startswith("detectron2://"):
        url = DETECTRON2_DOWNLOAD_PREFIX + url[len("detectron2://"):]
    parsed = urlparse(url)
    return os.path.join(get_cache_dir(), os.path.dirname(parsed.path.lstrip("/")), url.split("/")[-1]), url


def ensure_weights_available(cfg, resuming=False):
    """Download a MODEL.WEIGHTS URL now (kept in Detectron2's cache), so an offline machine gets
    one line saying which file to put where, not a traceback from the checkpointer; returns the
    local path, or None when MODEL.WEIGHTS is not a URL or a resumed run will not read it."""
    weights = cfg.MODEL.WEIGHTS
    if "://" not in weights:
        return None
    if resuming and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return None
    from detectron2.utils.file_io import PathManager

    try:
        return PathManager.get_local_path(weights)
    except OSError as e:  # URLError, HTTPError, connection and DNS failures
        cached, download_url = download_cache_path(weights)
        reason = str(getattr(e, "reason", None) or e).strip()
        reason = reason.splitlines()[0] if reason else type(e).__name__
        raise ConfigError(
            f"cannot download MODEL.WEIGHTS={weights} ({reason}); download {download_url} on a "
            f"machine with network and put it at {cached} (Detectron2 reads it from there), "
            "or set MODEL.WEIGHTS to a local copy"
        ) from None
