"""The pieces ``tools/train_net.py``'s ``Trainer(DefaultTrainer)`` is built from."""
import logging
import os

import torch
from torch.nn.parallel import DistributedDataParallel

from detectron2.data import (
    DatasetMapper,
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.data import transforms as T
from detectron2.engine import HookBase
from detectron2.evaluation import CityscapesSemSegEvaluator, DatasetEvaluators, LVISEvaluator
from detectron2.utils import comm

from ..data import check_label_values, missing_files_reported, prepare_dataset
from ..errors import DatasetError
from ..data.class_counting import load_or_compute_class_stats
from ..evaluation import LongTailSemSegEvaluator
from ..io import write_json_atomically

logger = logging.getLogger(__name__)


class LossIterationHook(HookBase):
    """Tells iteration-dependent losses (LDAM's deferred re-weighting) the current iteration."""

    def before_train(self):
        model = self.trainer.model
        model = model.module if isinstance(model, DistributedDataParallel) else model
        # Found once: the model's modules do not change during training.
        self._losses = [m for m in model.modules() if hasattr(m, "drw_start")]

    def before_step(self):
        for loss in self._losses:
            loss.iteration = self.trainer.iter


def create_ddp_model(model, find_unused_parameters=False):
    """DDP over the processes of ``launch``; ``device_ids=None`` for CPU processes.

    Detectron2's ``DefaultTrainer`` always passes ``device_ids=[local_rank]`` (CUDA only) and no
    ``find_unused_parameters``, which multi-expert heads and frozen stage-2 models need.
    """
    if comm.get_world_size() == 1:
        return model
    on_cuda = next(model.parameters()).is_cuda
    return DistributedDataParallel(
        model,
        device_ids=[comm.get_local_rank()] if on_cuda else None,
        broadcast_buffers=False,
        find_unused_parameters=find_unused_parameters,
    )


def is_sem_seg(cfg):
    return cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor"


def needs_class_stats(cfg):
    """Semantic segmentation always (evaluator groups, label checks); instance segmentation when
    the long-tail box predictor uses class counts (BLV, GRW, count-based losses)."""
    from ..modeling.roi_heads.long_tail import box_predictor_needs_class_stats

    return is_sem_seg(cfg) or box_predictor_needs_class_stats(cfg)


def build_sem_seg_train_augmentations(cfg):
    """Resize, crop (no class over SINGLE_CATEGORY_MAX_AREA of the crop), flip: DeepLab's recipe."""
    augs = [
        T.ResizeShortestEdge(
            cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING
        )
    ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                cfg.INPUT.CROP.TYPE,
                cfg.INPUT.CROP.SIZE,
                cfg.INPUT.CROP.SINGLE_CATEGORY_MAX_AREA,
                cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        )
    augs.append(T.RandomFlip())
    return augs


class CheckedSemSegDatasetMapper(DatasetMapper):
    """DatasetMapper that refuses label values outside [0, NUM_CLASSES) ∪ {ignore}, naming the file."""

    def __init__(self, cfg, is_train=True, augmentations=None):
        if augmentations is None:
            augmentations = build_sem_seg_train_augmentations(cfg)
        super().__init__(cfg, is_train, augmentations=augmentations)
        self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        self.ignore_label = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE

    def __call__(self, dataset_dict):
        label_file = dataset_dict.get("sem_seg_file_name")
        mapped = super().__call__(dataset_dict)
        if "sem_seg" in mapped:
            check_label_values(mapped["sem_seg"].numpy(), self.num_classes, self.ignore_label, label_file)
        return mapped


def build_train_loader(cfg):
    names = list(cfg.DATASETS.TRAIN)
    for name in names:
        prepare_dataset(name)
    mapper = CheckedSemSegDatasetMapper(cfg, True) if is_sem_seg(cfg) else None
    with missing_files_reported(names):
        return build_detection_train_loader(cfg, mapper=mapper)


def needs_test_labels(cfg):
    """MEDOE's oracle reads the labels at inference."""
    return is_sem_seg(cfg) and cfg.MODEL.SEM_SEG_HEAD.NAME == "MEDOEHead" and cfg.MODEL.MEDOE.ORACLE


def build_test_loader(cfg, dataset_name):
    prepare_dataset(dataset_name)
    mapper = None
    if needs_test_labels(cfg):
        # is_train=True keeps "sem_seg" in the inputs; the augmentation is the test resize only.
        test_resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
        mapper = CheckedSemSegDatasetMapper(cfg, True, augmentations=[test_resize])
    with missing_files_reported([dataset_name]):
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)


class SavedLVISEvaluator(LVISEvaluator):
    """Detectron2's LVISEvaluator (AP, APr, APc, APf of bbox and segm) that also writes its
    results to ``OUTPUT_DIR/inference/<dataset>/lvis_results.json``, as the semantic-segmentation
    evaluator writes ``sem_seg_results.json`` (tools/compare_lvis_results.py reads it)."""

    def evaluate(self):
        results = super().evaluate()
        if results and self._output_dir and comm.is_main_process():
            write_json_atomically(results, os.path.join(self._output_dir, "lvis_results.json"))
        return results


def build_evaluator(cfg, dataset_name, output_folder=None):
    """Long-tail sem-seg evaluator (+ Cityscapes' own on Cityscapes), LVISEvaluator on LVIS."""
    output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    metadata = prepare_dataset(dataset_name)
    evaluator_type = getattr(metadata, "evaluator_type", None)
    if evaluator_type in ("sem_seg", "cityscapes_sem_seg"):
        stats = load_or_compute_class_stats(cfg)
        evaluators = [
            LongTailSemSegEvaluator(
                dataset_name,
                distributed=True,
                output_dir=output_folder,
                class_groups=stats.groups,
                group_shares={g: stats.group_share(g) for g in stats.groups},
                uniform_seed=cfg.TEST.UNIFORM.SEED if cfg.TEST.UNIFORM.ENABLED else None,
            )
        ]
        if evaluator_type == "cityscapes_sem_seg":
            evaluators.append(CityscapesSemSegEvaluator(dataset_name))
        return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
    if evaluator_type == "lvis":
        # Tasks from the config: Detectron2 infers them from the predictions, and a model that
        # predicts nothing (early in training) would then silently skip segm.
        tasks = ("bbox", "segm") if cfg.MODEL.MASK_ON else ("bbox",)
        return SavedLVISEvaluator(dataset_name, tasks=tasks, output_dir=output_folder,
                                  max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
    raise DatasetError(
        f"dataset {dataset_name} has evaluator_type {evaluator_type!r}; LongTailSeg evaluates "
        "sem_seg, cityscapes_sem_seg and lvis sets: fix DATASETS.TEST"
    )
