"""Train and test loaders: Detectron2's builders with label checks and one-line errors for
missing files."""
from detectron2.data import DatasetMapper, build_detection_test_loader, build_detection_train_loader
from detectron2.data import transforms as T

from .datasets import missing_files_reported, prepare_dataset
from .labels import check_label_values


def is_sem_seg(cfg):
    return cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor"


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
