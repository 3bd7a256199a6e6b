"""Class statistics of the real training splits, shipped with the package.

A BLV, DisAlign or MEDOE model on ADE20K, Cityscapes or LVIS reads its classes' frequencies when
it is built; with these files it can be built, evaluated and demoed on a machine that does not
hold the training split. Counted statistics still win whenever the split is on disk
(``class_counting.resolve_class_stats``), and are compared with these (``compare``).

Each file is a ``longtailseg-class-stats/1`` JSON made by ``tools/make_published_class_stats.py``;
its ``source`` field names where the numbers come from:

* ``ade20k_sem_seg_train``: ADE20K's objectInfo150.txt (SceneParsing benchmark), Ratio (share of
  all pixels) and Train (training images holding the class) columns; groups as DisAlign's.
* ``cityscapes_fine_sem_seg_train``: pixels per train id over the 2975 gtFine training labels
  (``*_labelTrainIds.png``), as counted and published by several public repositories; the
  per-class image counts are not published (stored as 0).
* ``lvis_v0.5_train`` / ``lvis_v1_train``: the ``instance_count`` and ``image_count`` fields of
  the categories of LVIS's training json (``lvis_v0.5_train.json``, ``lvis_v1_train.json``);
  groups from their ``frequency`` field.
"""
import os

import numpy as np

from ..longtail import class_stats as cs

FILES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "class_stats_files")
# Detectron2's builtin training-split names -> the shipped file.
PUBLISHED_CLASS_STATS = {
    "ade20k_sem_seg_train": "ade20k_sem_seg_train.json",
    "cityscapes_fine_sem_seg_train": "cityscapes_fine_sem_seg_train.json",
    "lvis_v0.5_train": "lvis_v0.5_train.json",
    "lvis_v1_train": "lvis_v1_train.json",
}
# A counted share differing from the published one by more than this (absolute, as a share of
# the counted unit), or a class in another group, is worth a warning: the data on disk is not
# the published split (a subset, another version, relabelled classes).
SHARE_TOLERANCE = 0.005


def published_stats_path(dataset_name):
    """The shipped statistics file of ``dataset_name``, or None when none is shipped."""
    name = PUBLISHED_CLASS_STATS.get(dataset_name)
    return os.path.join(FILES_DIR, name) if name else None


def load_published(dataset_name):
    """The shipped ``ClassStats`` of ``dataset_name`` (None when none is shipped)."""
    path = published_stats_path(dataset_name)
    return cs.load(path) if path else None


def regrouped(stats, head_ratio, tail_ratio):
    """``stats`` with its semantic-segmentation groups recomputed for the config's thresholds
    (``class_stats.regrouped``: shares of all pixels); LVIS groups are the json's field, kept."""
    return cs.regrouped(stats, head_ratio, tail_ratio) or stats


def compare(counted, published):
    """Differences worth a warning between statistics counted on disk and the published ones:
    a list of short phrases, empty when they agree (same classes in each group, every share within
    ``SHARE_TOLERANCE``)."""
    problems = []
    moved = [counted.class_names[c] for g in counted.groups for c in counted.groups[g]
             if c not in set(published.groups.get(g, []))]
    if moved:
        problems.append(f"{len(moved)} classes in another group (e.g. {', '.join(moved[:3])})")
    difference = np.abs(counted.frequencies - published.frequencies)
    worst = int(np.argmax(difference))
    if difference[worst] > SHARE_TOLERANCE:
        problems.append(f"share of {counted.class_names[worst]!r} {counted.frequencies[worst]:.4f} "
                        f"counted vs {published.frequencies[worst]:.4f} published")
    return problems
