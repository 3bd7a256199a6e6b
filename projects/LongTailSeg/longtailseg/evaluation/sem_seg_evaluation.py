"""Semantic-segmentation evaluation with head / body / tail breakdown.

:class:`LongTailSemSegEvaluator` reports Detectron2's ``SemSegEvaluator`` metrics plus mIoU /
mACC per class group. mIoU follows the standard rule (mmsegmentation, which the long-tail papers
used, and Detectron2's mIoU): a class counts when it occurs in the ground truth or in the
prediction, so a class predicted but absent from the ground truth has IoU 0; only a class with
neither is left out. The rule ``"ground_truth"`` (``TEST.MIOU_RULE``) leaves out every class
without ground-truth pixels instead; it is not comparable with published numbers.
"""

import logging
import math
import os
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
from tabulate import tabulate

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.comm import all_gather, is_main_process, synchronize

from ..data.labels import check_label_values, read_label
from ..errors import ConfigError, DatasetError
from ..io import write_json_atomically, write_numpy_atomically

DEFAULT_IGNORE_LABEL = 255
RESULTS_FILE_NAME = "sem_seg_results.json"
CONFUSION_MATRIX_FILE_NAME = "sem_seg_confusion_matrix.npy"
# Which classes enter mIoU and mDice: "standard" = those in the ground truth or the prediction
# (a predicted but absent class scores 0); "ground_truth" = only those with ground-truth pixels.
MIOU_RULES = ("standard", "ground_truth")
# At most this many offending label values are named in an error message (one line).
_MAX_VALUES_IN_MESSAGE = 10


def sem_seg_metrics(
    conf_matrix: np.ndarray,
    class_names: Sequence[str],
    class_groups: Optional[Mapping[str, Sequence[int]]] = None,
    miou_rule: str = "standard",
) -> Dict[str, float]:
    """Metrics (in percent) from a ``(C+1) x (C+1)`` confusion matrix indexed ``[pred, gt]``.

    The last row / column holds ignored ground-truth pixels and is not counted.

    * IoU and Dice (``miou_rule="standard"``): a class with ground-truth or predicted pixels
      counts; one predicted but absent from the ground truth has IoU 0 and Dice 0; one with
      neither is NaN and left out of every mean. With ``"ground_truth"`` every class without
      ground-truth pixels is NaN and left out.
    * ACC: NaN and left out for a class without ground-truth pixels (either rule).

    A mean over no class is NaN. Keys follow Detectron2 (``mIoU``, ``fwIoU``, ``IoU-<name>``,
    ``mACC``, ``pACC``, ``ACC-<name>``) plus ``mIoU-<group>`` and ``mACC-<group>`` for each group,
    ``mDice`` (mean of the per-class Dice 2TP / (|pred| + |gt|)) and ``DiceErr`` = 1 - mDice / 100,
    the "Dice error" of the PAT paper (a fraction, not a percentage).

    PAT's three metrics (mIoU, "Pix Acc" = ``pACC``, "Dice Err" = ``DiceErr``) are computed here
    over the whole evaluated set, from one confusion matrix summed over its images, not per image
    and then averaged. The paper does not say which it used; over the set is chosen because (1) it
    is the standard rule of Detectron2's SemSegEvaluator and mmsegmentation, which PAT's mIoU is
    compared against; (2) a per-image mean is undefined or arbitrary for the classes an image lacks
    (most NYUv2 frames miss most of the 14 categories), and would weigh a tail class's few pixels
    in one image like a whole image of background; (3) pixel accuracy is then the share of all
    labelled pixels, whatever the image sizes. PAT's table lists Dice errors above 1 on NYUv2
    (1.80-2.40), which no 1 - mean Dice can be, so its exact formula is not recoverable from the
    text; ``DiceErr`` here is 1 - mDice / 100, in [0, 1].
    """
    if miou_rule not in MIOU_RULES:
        raise ConfigError(f"TEST.MIOU_RULE is {miou_rule!r}; choose one of {', '.join(MIOU_RULES)}")
    num_classes = len(class_names)
    per_class = per_class_metrics(conf_matrix, num_classes, miou_rule)
    iou, acc, dice = per_class["iou"], per_class["acc"], per_class["dice"]
    gt_pixels = per_class["gt_pixels"]
    total_gt = gt_pixels.sum()

    res = {}
    res["mIoU"] = 100 * _nanmean(iou)
    present = gt_pixels > 0
    # Detectron2's fwIoU: weights are ground-truth shares, so only present classes contribute.
    weighted_iou = np.sum(iou[present] * gt_pixels[present])
    res["fwIoU"] = 100 * float(weighted_iou / total_gt) if total_gt > 0 else math.nan
    for name, value in zip(class_names, iou):
        res[f"IoU-{name}"] = 100 * float(value)
    res["mACC"] = 100 * _nanmean(acc)
    res["pACC"] = 100 * float(per_class["true_positives"].sum() / total_gt) if total_gt > 0 else math.nan
    for name, value in zip(class_names, acc):
        res[f"ACC-{name}"] = 100 * float(value)
    res["mDice"] = 100 * _nanmean(dice)
    res["DiceErr"] = 1 - res["mDice"] / 100
    for group, ids in (class_groups or {}).items():
        ids = np.asarray(list(ids), dtype=np.int64)
        res[f"mIoU-{group}"] = 100 * _nanmean(iou[ids])
        res[f"mACC-{group}"] = 100 * _nanmean(acc[ids])
    return res


# Results key of the Pearson correlation between per-class accuracy and training pixel share.
ACC_FREQUENCY_PEARSON = "Pearson-ACC-frequency"


def accuracy_frequency_correlation(acc: Sequence[float], train_shares: Sequence[float]) -> float:
    """Pearson's r between the per-class accuracy and the class's share of the training pixels
    (MEDOE's Table 10: the weak correlation at the pixel level), over the classes whose
    accuracy is defined (ground truth in the test set); NaN with fewer than two such classes or
    when either side is constant. A fraction in [-1, 1], not a percentage."""
    acc = np.asarray([math.nan if a is None else a for a in acc], dtype=np.float64)
    shares = np.asarray(train_shares, dtype=np.float64)
    kept = np.isfinite(acc) & np.isfinite(shares)
    if kept.sum() < 2 or np.ptp(acc[kept]) == 0 or np.ptp(shares[kept]) == 0:
        return math.nan
    return float(np.corrcoef(acc[kept], shares[kept])[0, 1])


def per_class_metrics(conf_matrix: np.ndarray, num_classes: int,
                      miou_rule: str = "standard") -> Dict[str, np.ndarray]:
    """Per-class fractions (not percent) and pixel counts of a ``[pred, gt]`` confusion matrix:
    ``iou``, ``acc``, ``dice`` (NaN where a class is left out, see :func:`sem_seg_metrics`),
    ``true_positives``, ``gt_pixels``, ``pred_pixels``."""
    counted = np.asarray(conf_matrix, dtype=np.float64)[:num_classes, :num_classes]
    true_positives = counted.diagonal()
    gt_pixels = counted.sum(axis=0)
    # Predictions on ignored pixels sit in the last column, which `counted` drops: they are no FP.
    pred_pixels = counted.sum(axis=1)
    present = gt_pixels > 0
    scored = (gt_pixels + pred_pixels > 0) if miou_rule == "standard" else present

    iou = np.full(num_classes, np.nan)
    acc = np.full(num_classes, np.nan)
    dice = np.full(num_classes, np.nan)
    union = gt_pixels + pred_pixels - true_positives
    iou[scored] = true_positives[scored] / union[scored]
    dice[scored] = 2 * true_positives[scored] / (gt_pixels[scored] + pred_pixels[scored])
    acc[present] = true_positives[present] / gt_pixels[present]
    return {"iou": iou, "acc": acc, "dice": dice, "true_positives": true_positives,
            "gt_pixels": gt_pixels, "pred_pixels": pred_pixels}


def uniform_confusion_matrix(conf_matrix: np.ndarray, pixels_per_class: Optional[int] = None,
                             seed: int = 0) -> np.ndarray:
    """The confusion matrix of a test set sub-sampled so that every class has equally many pixels.

    MEDOE's "uniform" test setting. Drawing ``n`` of a class's ground-truth pixels at random
    without replacement and counting their predictions is a multivariate hypergeometric draw
    from that class's column of the full matrix, so the sub-sampling is done here, exactly and
    with a fixed seed, without keeping any pixel. ``n`` defaults to the pixel count of the
    rarest class present; ignored pixels (last column) are never sampled.
    """
    conf_matrix = np.asarray(conf_matrix, dtype=np.int64)
    num_classes = conf_matrix.shape[0] - 1
    gt_pixels = conf_matrix[:, :num_classes].sum(axis=0)
    present = np.flatnonzero(gt_pixels > 0)
    uniform = np.zeros_like(conf_matrix)
    if present.size == 0:
        return uniform
    n = int(gt_pixels[present].min()) if pixels_per_class is None else int(pixels_per_class)
    rng = np.random.Generator(np.random.PCG64(seed))
    for c in present:
        column = conf_matrix[:, c]
        uniform[:, c] = rng.multivariate_hypergeometric(column, min(n, int(column.sum())))
    return uniform


def _nanmean(values: np.ndarray) -> float:
    """Mean of the values that are not NaN; NaN when all are (no warning, unlike np.nanmean)."""
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _format_number(value, fmt: str = "{:.2f}") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fmt.format(value)


def format_group_table(
    sem_seg_results: Mapping[str, float],
    class_groups: Mapping[str, Sequence[int]],
    group_shares: Optional[Mapping[str, float]] = None,
) -> str:
    """Pipe table ``group | classes | pixel share (train) | mIoU | mACC``, one row per group
    plus ``all``. Shares are fractions (0.9 = 90 %); "-" where not given, "n/a" for NaN or null
    metrics (a group none of whose classes occur in the ground truth)."""
    rows = []
    for group, ids in class_groups.items():
        share = None if not group_shares or group not in group_shares else group_shares[group]
        rows.append(
            [
                group,
                len(ids),
                "-" if share is None else f"{100 * share:.2f} %",
                _format_number(sem_seg_results.get(f"mIoU-{group}")),
                _format_number(sem_seg_results.get(f"mACC-{group}")),
            ]
        )
    # Shares of the "all" row: the groups' sum, known only when every group's share is.
    shares_known = bool(group_shares) and all(g in group_shares for g in class_groups)
    all_share = sum(group_shares[g] for g in class_groups) if shares_known else None
    rows.append(
        [
            "all",
            sum(len(ids) for ids in class_groups.values()),
            "-" if all_share is None else f"{100 * all_share:.2f} %",
            _format_number(sem_seg_results.get("mIoU")),
            _format_number(sem_seg_results.get("mACC")),
        ]
    )
    return tabulate(
        rows,
        headers=["group", "classes", "pixel share (train)", "mIoU", "mACC"],
        tablefmt="pipe",
        stralign="right",
        numalign="right",
    )


def format_class_table(
    sem_seg_results: Mapping[str, float],
    class_names: Sequence[str],
    class_shares: Optional[Sequence[float]] = None,
    class_groups: Optional[Mapping[str, Sequence[int]]] = None,
) -> str:
    """Pipe table ``class | group | pixel share (train) | IoU | ACC``, one row per class, most
    frequent training class first (mmsegmentation's per-class table, with the training share
    and group beside each class). Without shares the classes keep the dataset's order and the
    share column shows "-"; "n/a" for a class absent from the ground truth."""
    group_of = {int(c): group for group, ids in (class_groups or {}).items() for c in ids}
    order = range(len(class_names))
    if class_shares is not None:
        order = sorted(order, key=lambda c: -class_shares[c])  # stable: ties keep dataset order
    rows = [
        [
            class_names[c],
            group_of.get(c, "-"),
            "-" if class_shares is None else f"{100 * class_shares[c]:.3f} %",
            _format_number(sem_seg_results.get(f"IoU-{class_names[c]}")),
            _format_number(sem_seg_results.get(f"ACC-{class_names[c]}")),
        ]
        for c in order
    ]
    return tabulate(
        rows,
        headers=["class", "group", "pixel share (train)", "IoU", "ACC"],
        tablefmt="pipe",
        stralign="right",
        disable_numparse=True,  # keep two decimals: 99.20, not 99.2
    )


def _nan_to_none(value):
    """JSON has no NaN: write missing metrics as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


class LongTailSemSegEvaluator(DatasetEvaluator):
    """Detectron2's semantic-segmentation metrics (``SemSegEvaluator``'s keys; standard mIoU, see
    the module docstring) plus ``mIoU-<group>`` / ``mACC-<group>`` for head / body / tail class
    groups, written with per-class numbers and the confusion matrix to ``output_dir``.

    It reads the ground truth as ``SemSegEvaluator`` does (the label file that the dataset record
    of an input names) but keeps no per-image RLE predictions (v0.6's
    ``sem_seg_predictions.json``), and refuses label values outside the classes.
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        class_groups: Optional[Mapping[str, Sequence[int]]] = None,
        group_shares: Optional[Mapping[str, float]] = None,
        num_classes: Optional[int] = None,
        ignore_label: Optional[int] = None,
        uniform_seed: Optional[int] = None,
        train_pixel_shares: Optional[Sequence[float]] = None,
        miou_rule: str = "standard",
        results_key: str = "sem_seg",
    ):
        """
        Args:
            dataset_name: a dataset registered in DatasetCatalog whose records carry
                ``file_name`` and ``sem_seg_file_name``.
            distributed: gather confusion matrices from all ranks; only the main process
                returns results.
            output_dir: where ``sem_seg_results.json`` (metrics, per-class numbers, groups) and
                ``sem_seg_confusion_matrix.npy`` are written (main process only).
            class_groups: group name -> contiguous class ids, e.g. ``ClassStats.groups``.
            group_shares: group name -> share of training pixels (only shown in the table).
            num_classes, ignore_label: default to the metadata's ``len(stuff_classes)`` and
                ``ignore_label`` (255 when unset).
            uniform_seed: when given, also report the "uniform" test setting (MEDOE): the
                metrics of the test pixels sub-sampled with this seed so that every class has
                as many pixels as the rarest one (``uniform_confusion_matrix``); summary keys
                get the suffix ``-uniform`` (``mIoU-uniform``, ``mACC-tail-uniform``, ...).
            train_pixel_shares: each class's share of the training pixels (``ClassStats
                .frequencies``), written beside its IoU / ACC in the results file.
            miou_rule: ``"standard"`` or ``"ground_truth"`` (:func:`sem_seg_metrics`).
            results_key: the key of the metrics in what :meth:`evaluate` returns; another
                evaluator of the same dataset (Cityscapes' own) may already use ``sem_seg``.
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._results_key = results_key
        if miou_rule not in MIOU_RULES:
            raise ConfigError(f"TEST.MIOU_RULE is {miou_rule!r}; choose one of {', '.join(MIOU_RULES)}")
        self._miou_rule = miou_rule

        self._gt_files = {
            record["file_name"]: record["sem_seg_file_name"]
            for record in DatasetCatalog.get(dataset_name)
            if "sem_seg_file_name" in record
        }

        meta = MetadataCatalog.get(dataset_name)
        class_names = meta.get("stuff_classes", None)
        if class_names is None:
            if num_classes is None:
                raise DatasetError(
                    f"dataset {dataset_name} has no stuff_classes in its metadata; set "
                    f"MetadataCatalog.get({dataset_name!r}).stuff_classes or pass num_classes"
                )
            class_names = [str(c) for c in range(num_classes)]
        elif num_classes is not None and num_classes != len(class_names):
            raise ConfigError(
                f"num_classes {num_classes} != {len(class_names)} stuff_classes of dataset "
                f"{dataset_name}; set MODEL.SEM_SEG_HEAD.NUM_CLASSES to {len(class_names)}"
            )
        self._class_names = list(class_names)
        self._num_classes = len(self._class_names)
        if ignore_label is None:
            ignore_label = meta.get("ignore_label", DEFAULT_IGNORE_LABEL)
        self._ignore_label = int(ignore_label)

        self._class_groups = OrderedDict(
            (group, [int(c) for c in ids]) for group, ids in (class_groups or {}).items()
        )
        for group, ids in self._class_groups.items():
            bad = [c for c in ids if not 0 <= c < self._num_classes]
            if bad:
                raise ConfigError(
                    f"class group {group!r} has class ids {bad[:_MAX_VALUES_IN_MESSAGE]} outside "
                    f"0..{self._num_classes - 1} of dataset {dataset_name}; use the class "
                    "statistics computed for this dataset (MODEL.LONG_TAIL.CLASS_STATS)"
                )
        self._group_shares = dict(group_shares) if group_shares else None
        if train_pixel_shares is not None and len(train_pixel_shares) != self._num_classes:
            raise ConfigError(
                f"the class statistics have {len(train_pixel_shares)} classes but dataset "
                f"{dataset_name} has {self._num_classes}; point MODEL.LONG_TAIL.CLASS_STATS at the "
                "file made for this dataset's training split"
            )
        self._train_pixel_shares = (
            [float(s) for s in train_pixel_shares] if train_pixel_shares is not None else None
        )
        self._uniform_seed = uniform_seed
        self.reset()

    def reset(self):
        # [pred, gt] counts; row / column C collect ignored ground-truth pixels.
        self._conf_matrix = np.zeros((self._num_classes + 1, self._num_classes + 1), dtype=np.int64)

    def process(self, inputs, outputs):
        """Add one batch to the confusion matrix.

        ``outputs[i]["sem_seg"]`` is a ``(C, H, W)`` score tensor for ``inputs[i]``; the ground
        truth is the label file that the dataset record of ``inputs[i]["file_name"]`` names.
        """
        for input_dict, output in zip(inputs, outputs):
            scores = output["sem_seg"] if isinstance(output, Mapping) else output
            if scores.shape[0] != self._num_classes:
                raise ConfigError(
                    f"the model predicts {scores.shape[0]} classes but dataset "
                    f"{self._dataset_name} has {self._num_classes}; set "
                    f"MODEL.SEM_SEG_HEAD.NUM_CLASSES to {self._num_classes}"
                )
            pred = scores.argmax(dim=0).cpu().numpy().astype(np.int64)
            gt_file = self._gt_file(input_dict)
            gt = self._read_labels(gt_file)
            if gt.shape != pred.shape:
                raise DatasetError(
                    f"label file {gt_file} is {gt.shape[0]}x{gt.shape[1]} but the prediction for "
                    f"{input_dict['file_name']} is {pred.shape[0]}x{pred.shape[1]}; labels must "
                    "have their image's size (re-create them with datasets/prepare_*.py)"
                )
            self._conf_matrix += np.bincount(
                (self._num_classes + 1) * pred.reshape(-1) + gt.reshape(-1),
                minlength=self._conf_matrix.size,
            ).reshape(self._conf_matrix.shape)

    def _gt_file(self, input_dict) -> str:
        file_name = input_dict["file_name"]
        try:
            return self._gt_files[file_name]
        except KeyError:
            raise DatasetError(
                f"image {file_name} has no sem_seg_file_name in dataset {self._dataset_name}; "
                "evaluate on the images of the registered dataset"
            ) from None

    def _read_labels(self, gt_file: str) -> np.ndarray:
        """Class ids of one label file, ignore_label mapped to C; bad values are refused."""
        gt = read_label(gt_file).astype(np.int64)  # as counting and training read it
        check_label_values(gt, self._num_classes, self._ignore_label, gt_file)
        gt[gt == self._ignore_label] = self._num_classes
        return gt

    def evaluate(self):
        """Metrics over all processed images; None on processes other than the main one."""
        conf_matrix = self._conf_matrix
        if self._distributed:
            synchronize()
            matrices = all_gather(self._conf_matrix)
            if not is_main_process():
                return None
            conf_matrix = np.sum(matrices, axis=0, dtype=np.int64)

        res = sem_seg_metrics(conf_matrix, self._class_names, self._class_groups, self._miou_rule)
        if self._train_pixel_shares is not None:
            acc = [res[f"ACC-{name}"] for name in self._class_names]
            res[ACC_FREQUENCY_PEARSON] = accuracy_frequency_correlation(acc, self._train_pixel_shares)
            self._logger.info(f"Pearson correlation of per-class accuracy and training pixel share on "
                              f"{self._dataset_name}: {res[ACC_FREQUENCY_PEARSON]:.3f}")
        if self._class_groups:
            self._logger.info(
                f"Semantic segmentation on {self._dataset_name} by class group:\n"
                + format_group_table(res, self._class_groups, self._group_shares)
            )
        self._logger.info(
            f"Semantic segmentation on {self._dataset_name} per class, most frequent in training first:\n"
            + format_class_table(res, self._class_names, self._train_pixel_shares, self._class_groups)
        )
        if self._uniform_seed is not None:
            uniform = sem_seg_metrics(
                uniform_confusion_matrix(conf_matrix, seed=self._uniform_seed),
                self._class_names, self._class_groups, self._miou_rule,
            )
            self._logger.info(
                f"Uniform test setting on {self._dataset_name} (every class sub-sampled to the "
                f"rarest class's pixel count, seed {self._uniform_seed}):\n"
                + format_group_table(uniform, self._class_groups, self._group_shares)
            )
            res.update({f"{key}-uniform": value for key, value in uniform.items()
                        if not key.startswith(("IoU-", "ACC-"))})
        if self._output_dir:
            # The matrix first: a results file on disk always has its matrix beside it.
            write_numpy_atomically(conf_matrix, os.path.join(self._output_dir, CONFUSION_MATRIX_FILE_NAME))
            write_json_atomically(
                _nan_to_none(self._results_file_content(res, conf_matrix)),
                os.path.join(self._output_dir, RESULTS_FILE_NAME),
                allow_nan=False,
            )
        return OrderedDict({self._results_key: res})

    def _results_file_content(self, res, conf_matrix) -> dict:
        """The metrics plus what is needed to read them: per-class numbers, group members and
        class counts."""
        per_class = per_class_metrics(conf_matrix, self._num_classes, self._miou_rule)
        gt_pixels = per_class["gt_pixels"]
        group_of = {c: g for g, ids in self._class_groups.items() for c in ids}
        classes = [
            {
                "id": c,
                "name": name,
                "group": group_of.get(c),
                "IoU": 100 * float(per_class["iou"][c]),
                "ACC": 100 * float(per_class["acc"][c]),
                "Dice": 100 * float(per_class["dice"][c]),
                "gt_pixels": int(gt_pixels[c]),
                "pred_pixels": int(per_class["pred_pixels"][c]),
                "train_pixel_share": (
                    self._train_pixel_shares[c] if self._train_pixel_shares is not None else None
                ),
            }
            for c, name in enumerate(self._class_names)
        ]
        return {
            "dataset": self._dataset_name,
            "sem_seg": res,
            "miou_rule": self._miou_rule,
            "per_class": classes,
            # [pred, gt] pixel counts; the last row / column is the ignore label.
            "confusion_matrix_file": CONFUSION_MATRIX_FILE_NAME,
            "class_names": self._class_names,
            "class_groups": self._class_groups,
            "group_class_counts": {g: len(ids) for g, ids in self._class_groups.items()},
            # Classes with ground-truth pixels (the ones that enter the group mACC).
            "group_present_class_counts": {
                g: int(sum(gt_pixels[c] > 0 for c in ids)) for g, ids in self._class_groups.items()
            },
            "group_shares": self._group_shares,
            "ignore_label": self._ignore_label,
        }
