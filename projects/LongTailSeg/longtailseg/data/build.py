"""Train and test loaders: Detectron2's builders with label checks and one-line errors for
missing files."""
import copy
import logging

import numpy as np
import torch
from PIL import Image

from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.data.build import get_detection_dataset_dicts
from detectron2.data.samplers import RepeatFactorTrainingSampler
from detectron2.utils import comm

from ..config import class_stats_from_config
from ..errors import ConfigError, DatasetError, LongTailSegError, one_line
from .class_counting import classes_per_image
from .datasets import is_sem_seg_dataset, missing_files_reported, prepare_dataset
from .labels import check_label_values, read_label
from .resumable import PositionedDataset, PositionSampler, PositionStream

logger = logging.getLogger(__name__)


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


def _image_size(path):
    """(width, height) from the file's header, None if it has none."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError):
        return None


def _decodes(path):
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError):
        return False


class CheckedDatasetMapper(DatasetMapper):
    """DatasetMapper whose unreadable image or label, or label of another size than its image,
    is a one-line DatasetError naming the file (Detectron2 raises PIL's error or a bare
    AssertionError)."""

    def __call__(self, dataset_dict):
        image_file, label_file = dataset_dict.get("file_name"), dataset_dict.get("sem_seg_file_name")
        try:
            return self.map(dataset_dict)
        except LongTailSegError:
            raise
        except FileNotFoundError as e:
            raise DatasetError(f"{e.filename or image_file} does not exist; restore it or remove it "
                               "from the dataset (datasets/README.md)") from None
        except (OSError, SyntaxError, ValueError, AssertionError) as e:
            for path in (image_file, label_file):
                if path and not _decodes(path):
                    raise DatasetError(f"{path} is not a readable image (truncated or another format: "
                                       f"{one_line(e)}); replace the file") from None
            if image_file and label_file and _image_size(image_file) != _image_size(label_file):
                raise DatasetError(
                    f"label {label_file} is {_image_size(label_file)} (width, height) but its image "
                    f"{image_file} is {_image_size(image_file)}; labels must have their image's size"
                ) from None
            raise

    def map(self, dataset_dict):
        return super().__call__(dataset_dict)


class CheckedSemSegDatasetMapper(CheckedDatasetMapper):
    """Also reads the label as counting and evaluation do (``labels.read_label``: a palette PNG
    gives its indices, where Detectron2's mapper would read the palette's grey levels) and refuses
    values outside [0, NUM_CLASSES) ∪ {ignore}, naming the file."""

    def __init__(self, cfg, is_train=True, augmentations=None):
        if augmentations is None:
            augmentations = build_sem_seg_train_augmentations(cfg)
        super().__init__(cfg, is_train, augmentations=augmentations)
        self.num_classes = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES
        self.ignore_label = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE

    def map(self, dataset_dict):
        """Detectron2's ``DatasetMapper.__call__`` for an image and its label, the label read by
        ``read_label``."""
        if "sem_seg_file_name" not in dataset_dict:
            return super().map(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        label = read_label(dataset_dict.pop("sem_seg_file_name"))
        if label.dtype != np.uint8:  # 16/32-bit: Detectron2 resizes only uint8 and float exactly
            label = label.astype(np.uint8 if 0 <= label.min() and label.max() <= 255 else np.float32)
        aug_input = T.AugInput(image, sem_seg=label)
        self.augmentations(aug_input)
        image, sem_seg = aug_input.image, aug_input.sem_seg
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        dataset_dict["sem_seg"] = torch.as_tensor(sem_seg.astype("long"))
        dataset_dict.pop("annotations", None)
        return dataset_dict

    def __call__(self, dataset_dict):
        label_file = dataset_dict.get("sem_seg_file_name")
        mapped = super().__call__(dataset_dict)
        if "sem_seg" in mapped:
            check_label_values(mapped["sem_seg"].numpy(), self.num_classes, self.ignore_label, label_file)
        return mapped


def sem_seg_repeat_factors(classes_per_image, repeat_threshold):
    """Repeat factor of each training image for semantic segmentation: LVIS's repeat-factor
    sampling (Gupta et al. 2019, appendix B.2) with the classes present in an image's label as its
    categories. f_c = the fraction of training images whose label holds class c,
    r_c = max(1, sqrt(t / f_c)), and an image's factor is the largest r_c of its classes (1 for
    a label of ignored pixels only). Computed by Detectron2's
    ``RepeatFactorTrainingSampler.repeat_factors_from_category_frequency``; the pixel re-sampling
    baseline of MEDOE's Table 2, whose own details did not survive its text."""
    if not repeat_threshold > 0:
        raise ConfigError(f"DATALOADER.REPEAT_THRESHOLD is {repeat_threshold}; repeat-factor sampling "
                          "needs an image frequency > 0 below which a class's images are repeated "
                          "(e.g. 0.02 for ADE20K)")
    records = [{"annotations": [{"category_id": int(c)} for c in classes]} for classes in classes_per_image]
    return RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(records, repeat_threshold)


def sem_seg_repeat_factors_of_config(cfg, dicts):
    """:func:`sem_seg_repeat_factors` of the training records ``dicts``, their classes from the
    run's class statistics (kept by the count, so no label is read again) or read from the labels."""
    stats = class_stats_from_config(cfg) if cfg.MODEL.LONG_TAIL.CLASS_STATS else None
    classes = classes_per_image(dicts, cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
                                stats, cfg.DATALOADER.CLASS_STATS_WORKERS)
    factors = sem_seg_repeat_factors(classes, cfg.DATALOADER.REPEAT_THRESHOLD)
    logger.info(f"repeat-factor sampling (DATALOADER.REPEAT_THRESHOLD {cfg.DATALOADER.REPEAT_THRESHOLD:g}): "
                f"{int((factors > 1).sum())} of {len(factors)} images repeated, largest factor "
                f"{float(factors.max()):.2f}, an epoch {float(factors.sum()) / max(len(factors), 1):.2f}x the images")
    return factors


def repeat_factors_from_category_frequency(dicts, threshold, sqrt=True):
    """LVIS's image repeat factors (Gupta et al. 2019, appendix B.2) by Detectron2's function,
    with DATALOADER.REPEAT_SQRT on Detectron2 v0.6 too (whose function always takes the root):
    max(1, t / f) = max(1, sqrt(t / f))^2 for every category, and an image's factor is the
    largest of its categories', so the factors without the root are the squares."""
    factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(dicts, threshold)
    return factors if sqrt else factors ** 2


def build_train_loader(cfg):
    """Detectron2's training loader; with ``DATALOADER.SAMPLER_TRAIN`` TrainingSampler or
    RepeatFactorTrainingSampler its data stream is a :class:`PositionedDataset` drawing the same
    distribution (the loader's ``position_sampler`` attribute resumes it, see data/resumable.py).
    Other samplers are Detectron2's own and restart their stream on resume."""
    names = list(cfg.DATASETS.TRAIN)
    for name in names:
        prepare_dataset(name)
    sem_seg = is_sem_seg_dataset(names[0])
    mapper = CheckedSemSegDatasetMapper(cfg, True) if sem_seg else CheckedDatasetMapper(cfg, True)
    # SEED < 0 means a random run: every process must still draw the same order.
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    with missing_files_reported(names):
        if cfg.DATALOADER.SAMPLER_TRAIN not in ("TrainingSampler", "RepeatFactorTrainingSampler"):
            return _seeded(build_detection_train_loader(cfg, mapper=mapper), seed)
        dicts = get_detection_dataset_dicts(
            names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    repeat_factors = None
    if cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler" and sem_seg:
        repeat_factors = sem_seg_repeat_factors_of_config(cfg, dicts)
        if not cfg.DATALOADER.REPEAT_SQRT:  # as for instances: the factors without the root
            repeat_factors = repeat_factors ** 2
    elif cfg.DATALOADER.SAMPLER_TRAIN == "RepeatFactorTrainingSampler":
        repeat_factors = repeat_factors_from_category_frequency(
            dicts, cfg.DATALOADER.REPEAT_THRESHOLD, cfg.DATALOADER.REPEAT_SQRT)
    dataset = PositionedDataset(dicts, mapper, seed, repeat_factors=repeat_factors)
    sampler = PositionSampler()
    grouped = cfg.DATALOADER.ASPECT_RATIO_GROUPING
    # The stream, not Detectron2's ToIterableDataset, splits the positions among the workers: the
    # loader then returns them in the sampler's order on v0.6 and on main alike (resumable.py).
    batch_size = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
    stream = PositionStream(dataset, sampler, unit=1 if grouped else batch_size)
    loader = build_detection_train_loader(  # mapper=None: the dataset maps
        dataset=stream, sampler=None, mapper=None, total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
        aspect_ratio_grouping=grouped, num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    loader = _seeded(loader, seed)
    loader.position_sampler, loader.positioned_dataset = sampler, dataset
    return loader


def _seeded(loader, seed):
    """``loader`` with the base seed of its iterators drawn from ``seed``, not from torch's global
    RNG: the iterator is made at the first ``next()`` (aspect-ratio grouping, newer Detectron2),
    which in a resumed run comes inside its first iteration, after RandomStateHook seeded the
    step, so that a draw there would shift that iteration's dropout masks, proposal samples and
    BLV noise against the uninterrupted run's."""
    torch_loader = loader
    while not isinstance(torch_loader, torch.utils.data.DataLoader):
        torch_loader = torch_loader.dataset  # AspectRatioGroupedDataset, MapDataset
    torch_loader.generator = torch.Generator().manual_seed(seed)
    return loader


def build_test_loader(cfg, dataset_name, with_labels=False):
    """Detectron2's test loader; ``with_labels`` keeps each image's ``sem_seg`` labels in the
    inputs (a model whose inference reads them, e.g. MEDOE's oracle)."""
    prepare_dataset(dataset_name)
    mapper = CheckedDatasetMapper(cfg, False)
    if with_labels and is_sem_seg_dataset(dataset_name):
        # is_train=True keeps "sem_seg" in the inputs; the augmentation is the test resize only.
        test_resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")
        mapper = CheckedSemSegDatasetMapper(cfg, True, augmentations=[test_resize])
    with missing_files_reported([dataset_name]):
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper)
