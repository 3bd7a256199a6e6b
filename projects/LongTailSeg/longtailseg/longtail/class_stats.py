"""Class statistics of a training split: counts, frequencies and the head / body / tail split.

Pure Python + numpy (no Detectron2): the method modules read frequencies from a
:class:`ClassStats`, and ``tools/compute_class_stats.py`` produces the JSON file it is stored in.

Group rules (documented choices, see ARCHITECTURE.md):

* semantic segmentation: by a class's share of all training pixels (ignored pixels included in
  the total, as ADE20K's published Ratio column is), head > 1 %, tail <= 0.1 %, body in between.
  On objectInfo150.txt's Ratio column, taken as published (not renormalised by its sum, 0.9275),
  this gives DisAlign's ADE20K split exactly: [:20], [20:75], [75:] of objectInfo150's order
  (20 / 55 / 75 classes; "chair" 0.0103 is head, "car" 0.0098 body, "computer" 0.0011 body,
  "swivel chair" 0.0010 tail);
* LVIS: the dataset's own ``frequency`` field, f -> head, c -> body, r -> tail.
"""
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import ClassStatsError
from ..io import write_json_atomically

FORMAT = "longtailseg-class-stats/1"
GROUP_NAMES = ("head", "body", "tail")
LVIS_FREQUENCY_TO_GROUP = {"f": "head", "c": "body", "r": "tail"}
DEFAULT_HEAD_RATIO = 0.01
DEFAULT_TAIL_RATIO = 0.001


@dataclass
class ClassStats:
    """Per-class counts of one training split.

    ``counts`` are labelled pixels (semantic segmentation) or instances (LVIS);
    ``image_counts`` the number of training images in which the class occurs.
    """

    dataset: str
    task: str  # "sem_seg" or "instances"
    class_names: List[str]
    counts: List[float]  # integers when counted; objectInfo150 ratios when read from ADE20K's file
    image_counts: List[int]
    groups: Dict[str, List[int]]
    group_rule: str
    num_images: int
    source: str = "counted over the training split"
    # What the counts were computed from (see data/class_counting.py ``data_fingerprint``): a
    # cached file whose fingerprint differs from the data's is counted again.
    data_fingerprint: Dict = field(default_factory=dict)
    extra: Dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def unit(self) -> str:
        return "pixels" if self.task == "sem_seg" else "instances"

    @property
    def frequencies(self) -> np.ndarray:
        """r_c = n_c / sum_k n_k."""
        counts = np.asarray(self.counts, dtype=np.float64)
        total = counts.sum()
        return counts / total if total > 0 else counts

    def group_share(self, group: str) -> float:
        """Share of all counted pixels (instances) that belong to ``group``'s classes."""
        return float(self.frequencies[self.groups.get(group, [])].sum())

    def to_json(self) -> Dict:
        data = asdict(self)
        data["format"] = FORMAT
        data["num_classes"] = self.num_classes
        data["unit"] = self.unit
        data["frequencies"] = [float(f) for f in self.frequencies]
        data["group_shares"] = {g: self.group_share(g) for g in self.groups}
        return data


def synthetic_long_tail(num_classes: int, task: str = "sem_seg", largest: float = 1e6,
                        decades: float = 4.0, head_ratio: float = DEFAULT_HEAD_RATIO,
                        tail_ratio: float = DEFAULT_TAIL_RATIO) -> ClassStats:
    """Statistics of no dataset: counts falling geometrically from ``largest`` over ``decades``
    powers of ten (class 0 the most frequent), for timing models without their data.

    Groups by share (``split_by_ratio``); with 150 classes that gives 29 head, 38 body and 83 tail
    classes. When a group comes out empty (few classes), the classes are split into thirds by
    frequency instead, so that a model whose parts own a group (MEDOE's experts) can be built.
    """
    if num_classes < 1:
        raise ValueError(f"a long-tailed profile needs at least one class, got {num_classes}")
    steps = np.arange(num_classes) / max(num_classes - 1, 1)
    counts = np.maximum(np.rint(largest * 10.0 ** (-decades * steps)), 1).astype(np.int64)
    groups = split_by_ratio(counts / counts.sum(), head_ratio, tail_ratio)
    rule = f"share of the profile's counts: head > {head_ratio:g}, tail < {tail_ratio:g}"
    if num_classes >= len(GROUP_NAMES) and not all(groups.values()):
        ids = np.array_split(np.arange(num_classes), len(GROUP_NAMES))
        groups = {name: part.tolist() for name, part in zip(GROUP_NAMES, ids)}
        rule = "thirds by frequency (the share rule left a group empty)"
    return ClassStats(
        dataset="synthetic long-tailed profile",
        task=task,
        class_names=[f"class_{c}" for c in range(num_classes)],
        counts=counts.tolist(),
        image_counts=[1] * num_classes,
        groups=groups,
        group_rule=rule,
        num_images=0,
        source=f"synthetic: counts {largest:g} * 10^(-{decades:g} c / (C - 1)), no dataset counted",
    )


def positive_counts(class_counts: Sequence[float]) -> torch.Tensor:
    """Counts as float64 with zeros replaced by the smallest positive count (log and powers of
    a zero count are infinite)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    positive = counts[counts > 0]
    if positive.numel() == 0:
        raise ValueError("class counts are all zero; recompute the class statistics")
    return torch.where(counts > 0, counts, positive.min())


def split_by_ratio(
    frequencies: Sequence[float],
    head_ratio: float = DEFAULT_HEAD_RATIO,
    tail_ratio: float = DEFAULT_TAIL_RATIO,
) -> Dict[str, List[int]]:
    """Head: r_c > head_ratio; tail: r_c <= tail_ratio; body: the rest (class ids ascending).

    ``frequencies`` are shares of all pixels (or instances); with the defaults and ADE20K's
    objectInfo150 Ratio column this is DisAlign's split (see the module docstring).
    """
    if not 0 <= tail_ratio <= head_ratio:
        raise ClassStatsError(
            f"group thresholds need 0 <= tail ratio ({tail_ratio}) <= head ratio ({head_ratio}); "
            "fix MODEL.LONG_TAIL.HEAD_RATIO / TAIL_RATIO or --head-ratio / --tail-ratio"
        )
    groups = {name: [] for name in GROUP_NAMES}
    for c, r in enumerate(frequencies):
        name = "head" if r > head_ratio else ("tail" if r <= tail_ratio else "body")
        groups[name].append(c)
    return groups


def pixel_shares(stats: ClassStats) -> np.ndarray:
    """Each class's share of all training pixels, the quantity the semantic-segmentation group
    thresholds compare: counts over ``extra["all_pixels"]`` (ignored pixels included, as counted;
    1.0 for objectInfo150's Ratio column, already such a share), else over the labelled pixels
    (files written before the total was recorded)."""
    counts = np.asarray(stats.counts, dtype=np.float64)
    total = float(stats.extra.get("all_pixels") or counts.sum() or 1.0)
    return counts / total


def regrouped(stats: ClassStats, head_ratio: float, tail_ratio: float) -> Optional[ClassStats]:
    """``stats`` with its head / body / tail recomputed from its counts at these thresholds, or
    None when they already give its groups, or when they cannot be recomputed: statistics that
    are not pixels (LVIS keeps its r / c / f field) or a file without the total its shares were
    taken of (``extra["all_pixels"]``, recorded since the thresholds became per dataset). Cheap: no
    label is read again."""
    if stats.task != "sem_seg" or not stats.extra.get("all_pixels"):
        return None
    groups = split_by_ratio(pixel_shares(stats), head_ratio, tail_ratio)
    if {g: sorted(ids) for g, ids in stats.groups.items()} == groups:
        return None
    rule = stats.group_rule.split(":")[0] if stats.group_rule else "share of all training pixels"
    extra = dict(stats.extra, head_ratio=head_ratio, tail_ratio=tail_ratio)
    return replace(stats, groups=groups, group_rule=f"{rule}: head > {head_ratio:g}, tail <= {tail_ratio:g}",
                   extra=extra)


def split_by_lvis_frequency(frequency_codes: Sequence[str]) -> Dict[str, List[int]]:
    """LVIS's r / c / f field mapped to tail / body / head (contiguous class ids)."""
    groups = {name: [] for name in GROUP_NAMES}
    for c, code in enumerate(frequency_codes):
        if code not in LVIS_FREQUENCY_TO_GROUP:
            raise ClassStatsError(
                f"category {c} has frequency {code!r}; LVIS categories need 'r', 'c' or 'f'"
            )
        groups[LVIS_FREQUENCY_TO_GROUP[code]].append(c)
    return groups


def save(stats: ClassStats, path: str) -> None:
    """Write the JSON atomically (temporary name, then rename)."""
    write_json_atomically(stats.to_json(), path)


_REQUIRED_KEYS = ("dataset", "task", "class_names", "counts", "image_counts", "groups")


def load(path: str) -> ClassStats:
    """Read a file written by :func:`save`; malformed files are refused with the fix."""
    regenerate = f"regenerate it with `python tools/compute_class_stats.py --dataset NAME --output {path}`"
    if not os.path.isfile(path):
        raise ClassStatsError(f"class-statistics file {path} does not exist; {regenerate}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:  # truncated JSON, a binary file (UnicodeDecodeError)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClassStatsError(f"class-statistics file {path} is not valid JSON ({reason}); {regenerate}") from None
    if not isinstance(data, dict):
        raise ClassStatsError(f"class-statistics file {path} holds a JSON {type(data).__name__}, "
                              f"not a {FORMAT} object; {regenerate}")
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if data.get("format") != FORMAT or missing:
        raise ClassStatsError(
            f"class-statistics file {path} is not a {FORMAT} file"
            + (f" (missing {', '.join(missing)})" if missing else "")
            + f"; {regenerate}"
        )
    _check_types(data, path, regenerate)
    n = len(data["class_names"])
    if len(data["counts"]) != n or len(data["image_counts"]) != n:
        raise ClassStatsError(
            f"class-statistics file {path} has {n} class names but {len(data['counts'])} counts; "
            + regenerate
        )
    _check_numbers(data, n, path, regenerate)
    return ClassStats(
        dataset=data["dataset"],
        task=data["task"],
        class_names=list(data["class_names"]),
        counts=[int(c) if float(c).is_integer() else float(c) for c in data["counts"]],
        image_counts=[int(c) for c in data["image_counts"]],
        groups={g: [int(c) for c in ids] for g, ids in data["groups"].items()},
        group_rule=data.get("group_rule", ""),
        num_images=int(data.get("num_images", 0)),
        source=data.get("source", ""),
        data_fingerprint=data.get("data_fingerprint", {}),
        extra=data.get("extra", {}),
    )


# key -> (the JSON type it must have, in words): a hand-edited or foreign file fails here in one
# line instead of deep inside a method (``groups`` as a list, ``counts`` as a number...).
_TYPES = {"dataset": (str, "a string"), "task": (str, "a string"), "class_names": (list, "a list"),
          "counts": (list, "a list"), "image_counts": (list, "a list"),
          "groups": (dict, 'an object {"head": [ids], "body": [ids], "tail": [ids]}'),
          "group_rule": (str, "a string"), "num_images": (int, "an integer"), "source": (str, "a string"),
          "data_fingerprint": (dict, "an object"), "extra": (dict, "an object")}


def _check_types(data, path, regenerate):
    for key, (kind, words) in _TYPES.items():
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise ClassStatsError(f"class-statistics file {path}: {key!r} must be {words}, found "
                                  f"{type(data[key]).__name__} {str(data[key])[:40]!r}; {regenerate}")
    for group, ids in data["groups"].items():
        if not isinstance(ids, list):
            raise ClassStatsError(f"class-statistics file {path}: group {group!r} must be a list of class "
                                  f"ids, found {type(ids).__name__}; {regenerate}")
    if not all(isinstance(name, str) for name in data["class_names"]):
        raise ClassStatsError(f"class-statistics file {path}: 'class_names' must be strings; {regenerate}")


def _check_numbers(data, num_classes, path, regenerate):
    """Counts finite, >= 0 and not all zero; group ids within the classes."""
    for key in ("counts", "image_counts"):
        values = data[key]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                   for v in values):
            bad = next(v for v in values if not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 and math.isfinite(v) and v >= 0))
            raise ClassStatsError(f"class-statistics file {path}: {key} must be finite numbers >= 0, "
                                  f"found {bad!r}; {regenerate}")
    if num_classes and not any(data["counts"]):
        raise ClassStatsError(f"class-statistics file {path}: every count is 0 (no labelled pixel or "
                              f"instance was counted); check the training labels, then {regenerate}")
    for group, ids in data["groups"].items():
        outside = [c for c in ids if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < num_classes]
        if outside:
            raise ClassStatsError(f"class-statistics file {path}: group {group!r} names class ids "
                                  f"{outside[:5]} outside 0..{num_classes - 1}; {regenerate}")


def check_matches(
    stats: ClassStats, class_names: Sequence[str], dataset: str, path: Optional[str] = None
) -> None:
    """Refuse statistics whose classes are not the dataset's (count and names, in order)."""
    where = f"class-statistics file {path}" if path else f"class statistics of {stats.dataset}"
    fix = (
        f"regenerate it with `python tools/compute_class_stats.py --dataset {dataset}"
        + (f" --output {path}`" if path else "`")
        + " or point MODEL.LONG_TAIL.CLASS_STATS at the file made for this dataset"
    )
    if stats.num_classes != len(class_names):
        raise ClassStatsError(
            f"{where} has {stats.num_classes} classes but dataset {dataset} has "
            f"{len(class_names)}; {fix}"
        )
    for c, (ours, theirs) in enumerate(zip(stats.class_names, class_names)):
        if ours != theirs:
            raise ClassStatsError(
                f"{where} names class {c} {ours!r} but dataset {dataset} names it {theirs!r}; {fix}"
            )


def parse_ade20k_object_info(path: str) -> Dict[str, list]:
    """Read ADE20K's ``objectInfo150.txt`` (tab-separated Idx, Ratio, Train, Val, Name).

    Returns ``{"ratios": [...], "train_images": [...], "names": [...]}`` in Idx order. The Ratio
    column is the class's share of all pixels of the full dataset, not of the labelled pixels
    (the 150 ratios sum to 0.9275; the rest is unlabelled).
    """
    ratios, train_images, names = [], [], []
    with open(path) as f:
        header = f.readline().strip().split("\t")
        if [h.strip() for h in header[:2]] != ["Idx", "Ratio"]:
            raise ClassStatsError(
                f"{path} does not start with ADE20K's 'Idx\\tRatio\\tTrain\\tVal\\tName' header; "
                "pass the objectInfo150.txt shipped with ADEChallengeData2016"
            )
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 5:
                continue
            ratios.append(float(parts[1]))
            train_images.append(int(parts[2]))
            names.append(parts[4].strip())
    return {"ratios": ratios, "train_images": train_images, "names": names}
