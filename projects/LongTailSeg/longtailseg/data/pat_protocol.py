"""PAT's evaluation protocol as an option of any registered dataset (Luu et al., "PAT: Pixel-wise
Adaptive Training for Long-tailed Segmentation", Sec. 5: "The training, validating, and testing
ratios are 0.8, 0.1, and 0.1 ... trained with a fixed seeding number of 0 ... 100 rounds").

* :func:`pat_split`: the labelled images, sorted by key, permuted by ``numpy.random.default_rng(seed)``
  and cut 0.8 / 0.1 / 0.1 (largest-remainder rounding, so the three counts sum to the total). The
  paper does not say which generator it shuffled with; this one is deterministic across platforms
  and numpy versions (``default_rng``'s PCG64 stream is fixed by numpy's policy).
* :func:`load_or_write_split`: the split is written once to a JSON file (atomically) beside the
  data, and every later run reads that file, so runs of different configs, seeds or machines
  share exactly the same images; a file whose seed, ratios or images differ is refused.
* :func:`register_pat_protocol`: ``<prefix>_pat_{train,val,test}`` from one or more registered
  source datasets (their records, split by image).
* :func:`iterations_for_epochs`: PAT counts training in epochs ("rounds"); Detectron2 counts
  iterations: ``iterations = epochs * ceil(n_train / batch)``.
"""
import functools
import json
import math
import os
from typing import Dict, List, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, Metadata, MetadataCatalog

from ..errors import DatasetError
from ..io import write_json_atomically

PAT_SEED = 0
PAT_RATIOS = (0.8, 0.1, 0.1)
PAT_SPLITS = ("train", "val", "test")
SPLIT_FORMAT = "longtailseg-pat-split/1"


def split_counts(num_images: int, ratios: Sequence[float] = PAT_RATIOS) -> List[int]:
    """Images per split: floor(r_i * n), the images left over given to the splits with the
    largest remainders (ties to the earlier split), so the counts sum to ``num_images``."""
    if len(ratios) != len(PAT_SPLITS) or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0):
        raise DatasetError(f"split ratios {tuple(ratios)} must be three non-negative numbers summing to 1")
    exact = [r * num_images for r in ratios]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:num_images - sum(counts)]:
        counts[i] += 1
    return counts


def pat_split(keys: Sequence[str], seed: int = PAT_SEED, ratios: Sequence[float] = PAT_RATIOS) -> Dict[str, List[str]]:
    """{"train": [...], "val": [...], "test": [...]}: the keys (image names) sorted, permuted with
    ``numpy.random.default_rng(seed)`` and cut by :func:`split_counts`; each split sorted."""
    ordered = sorted(set(keys))
    if len(ordered) != len(keys):
        raise DatasetError(f"{len(keys) - len(ordered)} image names appear twice; a split needs unique names")
    order = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in order]
    splits, start = {}, 0
    for split, count in zip(PAT_SPLITS, split_counts(len(ordered), ratios)):
        splits[split] = sorted(shuffled[start:start + count])
        start += count
    return splits


def load_or_write_split(path: str, keys: Sequence[str], seed: int = PAT_SEED,
                        ratios: Sequence[float] = PAT_RATIOS) -> Dict[str, List[str]]:
    """The split of ``keys`` kept in ``path``: read when the file exists (and checked to be this
    seed's, these ratios' and these images'), else computed by :func:`pat_split` and written
    atomically (concurrent first runs write the same bytes; the last rename wins)."""
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                stored = json.load(f)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path} is not a readable split file ({type(e).__name__}); delete it "
                               "and the next run writes it again") from None
        if not isinstance(stored, dict) or stored.get("format") != SPLIT_FORMAT \
                or not all(isinstance(stored.get(s), list) for s in PAT_SPLITS):
            raise DatasetError(f"{path} is not a {SPLIT_FORMAT} file; delete it and the next run writes it again")
        if stored.get("seed") != seed or not np.allclose(stored.get("ratios", ()), ratios):
            raise DatasetError(
                f"{path} holds the split of seed {stored.get('seed')} and ratios {stored.get('ratios')}, "
                f"not seed {seed} and ratios {list(ratios)}; delete it to split again")
        stored_keys = set().union(*(stored[s] for s in PAT_SPLITS))
        if stored_keys != set(keys):
            missing, extra = sorted(stored_keys - set(keys)), sorted(set(keys) - stored_keys)
            example = f"e.g. {missing[0]!r} is gone" if missing else f"e.g. {extra[0]!r} is new"
            raise DatasetError(
                f"{path} splits {len(stored_keys)} images but the dataset has {len(keys)} ({example}); "
                "restore the data, or delete the file to split the images anew (results of runs "
                "on the old split are then not comparable)")
        return {s: list(stored[s]) for s in PAT_SPLITS}
    splits = pat_split(keys, seed, ratios)
    try:
        write_json_atomically({"format": SPLIT_FORMAT, "seed": seed, "ratios": list(ratios),
                               "num_images": len(keys), **splits}, path)
    except OSError as e:
        raise DatasetError(f"cannot write the split file {path} ({e.strerror or e}); make its folder "
                           "writable, or run the dataset's prepare script once where it is") from None
    return splits


def split_file_path(folder: str, seed: int = PAT_SEED) -> str:
    """Where a dataset folder keeps its PAT split."""
    return os.path.join(folder, f"pat_split_seed{seed}.json")


def record_key(record: dict) -> str:
    """An image's name in the split file: its file name without folder and extension."""
    return os.path.splitext(os.path.basename(record["file_name"]))[0]


def load_split_records(records: List[dict], path: str, split: str, seed: int = PAT_SEED,
                       ratios: Sequence[float] = PAT_RATIOS) -> List[dict]:
    """The records of one split of ``records`` (all labelled images of a dataset)."""
    by_key = {}
    for record in records:
        key = record_key(record)
        if key in by_key:
            raise DatasetError(f"two images are named {key!r} ({by_key[key]['file_name']}, "
                               f"{record['file_name']}); the split file names images by file name")
        by_key[key] = record
    splits = load_or_write_split(path, list(by_key), seed, ratios)
    if not splits[split]:
        raise DatasetError(f"the {split} split of {len(by_key)} images is empty (split file {path}); "
                           "a dataset needs at least 3 labelled images for PAT's 0.8 / 0.1 / 0.1 split")
    return [by_key[key] for key in splits[split]]


class SplitMetadata(Metadata):
    """Metadata of a split of another registered dataset (``split_source``): a key not set here is
    the source's, read when first asked (so a source whose metadata lives in a file,
    ``FileMetadata``, is read only then). The source's ``image_root`` and ``sem_seg_root`` are not
    inherited: a split is part of a folder, so the pre-flight's whole-folder checks do not apply."""

    NOT_INHERITED = ("name", "split_source", "image_root", "sem_seg_root")

    def __getattr__(self, key):
        if key.startswith("_") or key in self.NOT_INHERITED or "split_source" not in self.__dict__:
            return super().__getattr__(key)
        return getattr(MetadataCatalog.get(self.__dict__["split_source"]), key)


def _load_from_sources(source_names, path, split, seed, ratios):
    records = [r for name in source_names for r in DatasetCatalog.get(name)]
    return load_split_records(records, path, split, seed, ratios)


def register_pat_protocol(source_names: Sequence[str], prefix: str, split_file: str,
                          seed: int = PAT_SEED, ratios: Sequence[float] = PAT_RATIOS, **metadata) -> List[str]:
    """Register ``<prefix>_pat_train / _val / _test``: the records of the registered datasets
    ``source_names`` (all the labelled images, e.g. a dataset's published train and test splits
    together) split by :func:`load_or_write_split` through ``split_file``. The new sets' metadata
    are ``metadata`` and, for every other key, the first source's (:class:`SplitMetadata`).
    Reads no file; returns the names."""
    names = []
    for split in PAT_SPLITS:
        name = f"{prefix}_pat_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_load_from_sources, tuple(source_names),
                                                        split_file, split, seed, tuple(ratios)))
        MetadataCatalog[name] = SplitMetadata(name=name, split_source=source_names[0],
                                              pat_split_file=split_file, **metadata)
        names.append(name)
    return names


def iterations_for_epochs(epochs: int, num_train_images: int, batch_size: int) -> int:
    """SOLVER.MAX_ITER for ``epochs`` passes over ``num_train_images`` at ``batch_size`` images
    per step (the last, partial batch of an epoch counted as a step, as a PyTorch DataLoader
    without drop_last does): ``epochs * ceil(num_train_images / batch_size)``. PAT: 100 epochs."""
    if epochs < 0 or num_train_images < 1 or batch_size < 1:
        raise ValueError(f"epochs >= 0, images >= 1 and batch >= 1 needed, got {epochs}, "
                         f"{num_train_images}, {batch_size}")
    return epochs * math.ceil(num_train_images / batch_size)
