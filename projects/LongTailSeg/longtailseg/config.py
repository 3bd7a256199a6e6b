"""add_longtailseg_config: the long-tail keys and their defaults, nothing else."""
from detectron2.config import CfgNode as CN


def add_longtailseg_config(cfg):
    """Add LongTailSeg's config keys (with DeepLab's, which our semantic-segmentation heads extend)."""
    if not hasattr(cfg.INPUT.CROP, "SINGLE_CATEGORY_MAX_AREA"):
        from detectron2.projects.deeplab import add_deeplab_config

        add_deeplab_config(cfg)

    cfg.MODEL.LONG_TAIL = CN()
    # JSON written by tools/compute_class_stats.py for the first training dataset. "" = count the
    # training split on first use and cache it as OUTPUT_DIR/class_stats.json.
    cfg.MODEL.LONG_TAIL.CLASS_STATS = ""
    # Semantic segmentation groups by share of training pixels: head > HEAD_RATIO,
    # tail < TAIL_RATIO, body between (DisAlign's ADE20K split). LVIS uses its r/c/f field.
    cfg.MODEL.LONG_TAIL.HEAD_RATIO = 0.01
    cfg.MODEL.LONG_TAIL.TAIL_RATIO = 0.001

    # DistributedDataParallel(find_unused_parameters=...): True for models whose forward leaves
    # parameters without gradient (frozen stage 2, experts that skip a batch).
    cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS = False

    # Processes used to count classes when CLASS_STATS is computed on first use.
    cfg.DATALOADER.CLASS_STATS_WORKERS = 2
