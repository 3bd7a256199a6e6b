"""MODEL.WEIGHTS given as a URL: fetched before any work, with a one-line error offline; a local
file that does not exist is named before any work too."""
import os
from urllib.parse import urlparse

from ..errors import ConfigError

# Where Detectron2's "detectron2://" paths are downloaded from (detectron2.utils.file_io).
DETECTRON2_DOWNLOAD_PREFIX = "https://dl.fbaipublicfiles.com/detectron2/"


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
    one line saying which file to put where, not a traceback from the checkpointer. Returns the
    local path of a URL, or None when MODEL.WEIGHTS is not a URL or a resumed run will not read it
    (a local file that does not exist: ``check_local_weights``)."""
    weights = cfg.MODEL.WEIGHTS
    if resuming and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return None
    if "://" not in weights:
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


def check_local_weights(cfg, resuming=False):
    """A training's local MODEL.WEIGHTS (ImageNet weights of the backbone, a checkpoint to start
    from) must exist: one line saying how to make the converted ImageNet files the configs name,
    instead of the checkpointer's assertion."""
    weights = cfg.MODEL.WEIGHTS
    if not weights or "://" in weights or os.path.isfile(weights):
        return
    if resuming and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return
    raise ConfigError(
        f"MODEL.WEIGHTS {weights} does not exist; for a backbone's ImageNet weights make it from the "
        "published release with tools/convert_pretrained_weights.py (ResNet-c, ResNeSt, HRNet) or "
        "tools/convert_mit_weights.py (MiT; MODEL_ZOO.md, \"ImageNet weights of the backbones\"), "
        "else point MODEL.WEIGHTS at the file (\"\" trains from scratch)"
    )
