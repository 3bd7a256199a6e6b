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

    # Classification loss of the semantic-segmentation heads (longtailseg/longtail/losses.py).
    cfg.MODEL.LONG_TAIL.LOSS = CN()
    cfg.MODEL.LONG_TAIL.LOSS.NAME = "CE"

    # BLV (balancing logit variation), training only: noise |clamp(N(0, SIGMA^2), -1, 1)| scaled
    # by each class's rarity is added to the logits before the loss. Authors' default SIGMA = 4.
    cfg.MODEL.LONG_TAIL.BLV = CN()
    cfg.MODEL.LONG_TAIL.BLV.ENABLED = False
    cfg.MODEL.LONG_TAIL.BLV.SIGMA = 4.0

    # Generalized re-weighting: class weights w_c = r_c^-RHO (sum C) in the classification loss.
    # DisAlign's RHO: 0.2 for ADE20K semantic segmentation, 0.8 for LVIS.
    cfg.MODEL.LONG_TAIL.GRW = CN()
    cfg.MODEL.LONG_TAIL.GRW.ENABLED = False
    cfg.MODEL.LONG_TAIL.GRW.RHO = 0.2

    # DisAlign stage 2: the model of MODEL.WEIGHTS (stage 1) is frozen, BatchNorm statistics
    # included; only the calibration (alpha, beta, confidence layer) is trained.
    cfg.MODEL.LONG_TAIL.DISALIGN = CN()
    cfg.MODEL.LONG_TAIL.DISALIGN.ENABLED = False
    # std of the confidence layer's normal initialisation (bias 0), as in the authors' code.
    cfg.MODEL.LONG_TAIL.DISALIGN.CONFIDENCE_INIT_STD = 0.01
    # The config that trains stage 1 (used only to tell the user how to make MODEL.WEIGHTS).
    cfg.MODEL.LONG_TAIL.DISALIGN.STAGE1_CONFIG = ""

    # DistributedDataParallel(find_unused_parameters=...): True for models whose forward leaves
    # parameters without gradient (frozen stage 2, experts that skip a batch).
    cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS = False

    # Processes used to count classes when CLASS_STATS is computed on first use.
    cfg.DATALOADER.CLASS_STATS_WORKERS = 2
