"""The evaluators a config gets: long-tail semantic segmentation (plus Cityscapes' own metrics on
Cityscapes), Detectron2's LVISEvaluator on LVIS."""
import importlib.util
import os

import numpy as np

from detectron2.evaluation import CityscapesSemSegEvaluator, DatasetEvaluators
from detectron2.utils import comm

from ..config import class_stats_from_config
from ..data.datasets import check_dataset
from ..errors import LongTailSegError
from ..io import write_json_atomically
from .lvis_evaluation import SavedLVISEvaluator  # noqa: F401  (re-exported)
from .sem_seg_evaluation import LongTailSemSegEvaluator

# Results key of the long-tail metrics where Cityscapes' own evaluator already returns "sem_seg".
LONG_TAIL_RESULTS_KEY = "sem_seg_long_tail"


def check_cityscapes_evaluation_runs(package_folder=None):
    """Refuse, before any inference, a cityscapesscripts whose evaluation calls ``np.in1d`` on a
    numpy without it (2.4 removed it); ``package_folder`` defaults to the installed package."""
    if hasattr(np, "in1d"):
        return
    if package_folder is None:
        spec = importlib.util.find_spec("cityscapesscripts")
        package_folder = list(spec.submodule_search_locations or [None])[0] if spec else None
    if package_folder is None:
        raise LongTailSegError("Cityscapes evaluation needs cityscapesscripts; run "
                               "`pip install cityscapesscripts` (LongTailSeg's install brings it)")
    path = os.path.join(package_folder, "evaluation", "evalPixelLevelSemanticLabeling.py")
    with open(path, encoding="utf-8") as f:
        if "np.in1d(" in f.read():
            raise LongTailSegError(
                f"{path} calls np.in1d, which numpy {np.__version__} no longer has; rewrite it with "
                "`python tools/patch_legacy_sources.py` from the LongTailSeg checkout (make setup does this)"
            )


class SavedCityscapesSemSegEvaluator(CityscapesSemSegEvaluator):
    """Detectron2's CityscapesSemSegEvaluator (cityscapesscripts' IoU, iIoU, IoU_sup, iIoU_sup)
    that also writes its results to ``<output_dir>/cityscapes_results.json``."""

    def __init__(self, dataset_name, output_dir=None):
        check_cityscapes_evaluation_runs()
        super().__init__(dataset_name)
        self._output_dir = output_dir

    def evaluate(self):
        results = super().evaluate()
        if results and self._output_dir and comm.is_main_process():
            write_json_atomically(results, os.path.join(self._output_dir, "cityscapes_results.json"))
        return results


def build_evaluator(cfg, dataset_name, output_folder=None):
    """Long-tail sem-seg evaluator, LVISEvaluator on LVIS. On Cityscapes both Cityscapes' own
    evaluator (results key ``sem_seg``, the official numbers) and the long-tail one (key
    ``sem_seg_long_tail``) run side by side."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    # One line if the set is unregistered, of another evaluator_type or lacks a key it needs.
    evaluator_type = check_dataset(dataset_name).evaluator_type
    if evaluator_type in ("sem_seg", "cityscapes_sem_seg"):
        stats = class_stats_from_config(cfg)
        cityscapes = evaluator_type == "cityscapes_sem_seg"
        long_tail = LongTailSemSegEvaluator(
            dataset_name,
            distributed=True,
            output_dir=output_folder,
            class_groups=stats.groups,
            group_shares={g: stats.group_share(g) for g in stats.groups},
            uniform_seed=cfg.TEST.UNIFORM.SEED if cfg.TEST.UNIFORM.ENABLED else None,
            train_pixel_shares=stats.frequencies.tolist(),
            miou_rule=cfg.TEST.MIOU_RULE,
            results_key=LONG_TAIL_RESULTS_KEY if cityscapes else "sem_seg",
        )
        if not cityscapes:
            return long_tail
        return DatasetEvaluators([SavedCityscapesSemSegEvaluator(dataset_name, output_folder), long_tail])
    # lvis. Tasks from the config: Detectron2 infers them from the predictions, and a model that
    # predicts nothing (early in training) would then silently skip segm.
    tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
    image_counts = class_stats_from_config(cfg).image_counts if cfg.MODEL.LONG_TAIL.CLASS_STATS else None
    return SavedLVISEvaluator(dataset_name, tasks=tasks, output_dir=output_folder,
                              max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                              train_image_counts=image_counts)
