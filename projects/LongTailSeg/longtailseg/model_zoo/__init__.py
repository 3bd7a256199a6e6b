"""LongTailSeg's model zoo, in the manner of ``detectron2.model_zoo``: the shipped configs by their
path under configs/, their checkpoints, and built models.

    from longtailseg import model_zoo
    cfg = model_zoo.get_config("lvis_v0.5/mask_rcnn_R_50_FPN_baseline_rfs.yaml", trained=True)
    model = model_zoo.get("synthetic/deeplab_v3_plus.yaml", trained=True,
                          checkpoint="output/synthetic/deeplab_v3_plus/model_final.pth")
"""
from .model_zoo import (  # noqa: F401
    PUBLISHED_CHECKPOINTS,
    PublishedCheckpoint,
    check_md5,
    config_root,
    ensure_weights_available,
    get,
    get_checkpoint_url,
    get_config,
    get_config_file,
    list_configs,
)
