"""The profile sets: ADE20K's published pixel shares to the pixel (DisAlign's 20 / 55 / 75
groups by the project's own class counting), LVIS v1's 1203 categories with their 337 / 461 / 405
split, every category in training, image counts in LVIS's order."""
import longtailseg  # noqa: F401  (registers the LongTailSeg components)

import glob
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import run_tool
from detectron2.data import DatasetCatalog, MetadataCatalog
from longtailseg.data import class_counting, register_synthetic_datasets
from longtailseg.data.synthetic import profiles
from longtailseg.data.synthetic.generator import generate_profile
from longtailseg.errors import DatasetError
from longtailseg.longtail import class_stats as cs

# The smallest sizes that hold each profile (32 x 32 images): the ADE20K profile's exact shares
# need about 32 images, LVIS's 1203 categories 344 (3.5 categories per image).
TINY_ADE = dict(num_train=40, num_val=32, size=32, progress=False)
TINY_LVIS = dict(num_train=344, num_val=344, size=32, progress=False)


def _generated(tmp_path_factory, profile, sizes):
    """(root, summary) of a tiny ``profile`` set, generated and registered."""
    root = tmp_path_factory.mktemp("datasets") / f"synthetic_{profile}_profile"
    summary = generate_profile(str(root), profile, seed=0, **sizes)
    register_synthetic_datasets(str(root), profile=profile)
    return root, summary


@pytest.fixture(scope="module")
def ade_profile(tmp_path_factory):
    return _generated(tmp_path_factory, "ade20k", TINY_ADE)


@pytest.fixture(scope="module")
def lvis_profile(tmp_path_factory):
    return _generated(tmp_path_factory, "lvis_v1", TINY_LVIS)


def _train_labels(root):
    paths = sorted(glob.glob(f"{root}/ADEChallengeData2016/annotations_detectron2/training/*.png"))
    return np.stack([np.asarray(Image.open(p)) for p in paths])


# --- ADE20K profile --------------------------------------------------------------------------------


def test_ratio_table_is_the_published_object_info(ade20k_object_info):
    published = cs.parse_ade20k_object_info(ade20k_object_info)["ratios"]
    assert list(profiles.ADE20K_RATIOS) == pytest.approx(published, abs=0)


def test_ade_profile_pixel_shares_are_the_published_ratios_to_the_pixel(ade_profile):
    root, _ = ade_profile
    labels = _train_labels(root)
    assert labels.shape[0] == TINY_ADE["num_train"]
    counts = np.bincount(labels.ravel(), minlength=256)
    assert set(np.flatnonzero(counts)) <= set(range(150)) | {255}
    shares = counts[:150] / labels.size
    ratios = np.asarray(profiles.ADE20K_RATIOS)
    # every class within half a pixel of its ratio, except where a nudge keeps its group
    assert np.abs(shares - ratios).max() <= 1.5 / labels.size
    assert np.all(np.diff(counts[:150]) <= 0), "counts follow the Ratio order"
    # the unlabelled rest is ignore: 1 - 0.9275 of the pixels
    assert counts[255] == labels.size - counts[:150].sum()
    assert counts[255] / labels.size == pytest.approx(1 - ratios.sum(), abs=150 / labels.size)


def test_ade_profile_groups_are_disalign_s_by_the_project_s_class_counting(ade_profile):
    stats = class_counting.compute_class_stats("synthetic_ade20k_profile_sem_seg_train",
                                               num_workers=1, progress=False)
    assert stats.num_classes == 150
    assert stats.groups == {"head": list(range(20)), "body": list(range(20, 75)),
                            "tail": list(range(75, 150))}


def test_ade_profile_val_split_holds_every_class(ade_profile):
    root, _ = ade_profile
    paths = glob.glob(f"{root}/ADEChallengeData2016/annotations_detectron2/validation/*.png")
    present = set()
    for path in paths:
        present |= set(np.unique(np.asarray(Image.open(path))).tolist())
    assert len(paths) == TINY_ADE["num_val"]
    assert present - {255} == set(range(150))


def test_ade_profile_registration_and_reproducibility(ade_profile, tmp_path):
    root, summary = ade_profile
    metadata = MetadataCatalog.get("synthetic_ade20k_profile_sem_seg_train")
    assert metadata.evaluator_type == "sem_seg" and metadata.ignore_label == 255
    assert len(metadata.stuff_classes) == len(metadata.stuff_colors) == 150
    assert len(DatasetCatalog.get("synthetic_ade20k_profile_sem_seg_val")) == TINY_ADE["num_val"]
    assert sorted(os.listdir(root)) == ["ADEChallengeData2016", "synthetic_classes.json"]
    again = generate_profile(str(tmp_path / "again"), "ade20k", seed=0, **TINY_ADE)
    assert again["semantic"] == summary["semantic"]

    def digest(folder):
        files = sorted(glob.glob(f"{folder}/ADEChallengeData2016/**/*.*", recursive=True))
        return [hashlib.sha256(open(f, "rb").read()).hexdigest() for f in files]

    assert digest(tmp_path / "again") == digest(root)


def test_ade_profile_too_few_pixels_is_a_one_line_error(tmp_path):
    with pytest.raises(DatasetError, match="too few pixels.*use more images"):
        generate_profile(str(tmp_path), "ade20k", num_train=8, num_val=8, size=32, progress=False)


def test_exact_targets_keep_the_groups_at_any_size():
    for num_pixels in (12_000, 40_960, 1_228_800, 1_000_003):
        targets = profiles.exact_pixel_targets(num_pixels)
        groups = [profiles.share_group(t / num_pixels) for t in targets]
        assert groups == [profiles.share_group(r) for r in profiles.ADE20K_RATIOS]
        assert (groups.count("head"), groups.count("body"), groups.count("tail")) == (20, 55, 75)


def test_make_synthetic_data_writes_a_profile(tmp_path):
    proc = run_tool("make_synthetic_data.py", "--root", tmp_path / "ade", "--profile", "ade20k",
                    "--num-images", 40, "--num-val-images", 32, "--size", 32)
    assert "20 > 1%, 55 in (0.1%, 1%], 75 <= 0.1%; 7.2" in proc.stdout
    proc = run_tool("make_synthetic_data.py", "--root", tmp_path / "x", "--profile", "ade20k",
                    "--num-classes", 30, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --num-classes does not apply to --profile ade20k (its classes are the real data "
        "set's); leave it out"]


# --- LVIS v1 profile -------------------------------------------------------------------------------


def test_lvis_profile_has_lvis_v1_categories_and_split(lvis_profile):
    root, summary = lvis_profile
    with open(root / "lvis" / "lvis_v1_train.json") as f:
        train = json.load(f)
    categories = train["categories"]
    assert [c["id"] for c in categories] == list(range(1, 1204))
    frequencies = [c["frequency"] for c in categories]
    assert (frequencies.count("r"), frequencies.count("c"), frequencies.count("f")) == (337, 461, 405)
    from detectron2.data.datasets.lvis_v1_categories import LVIS_CATEGORIES

    published = {c["id"]: c for c in LVIS_CATEGORIES}
    assert all(c["name"] == published[c["id"]]["name"]
               and c["frequency"] == published[c["id"]]["frequency"] for c in categories)
    assert train["info"]["image_count_source"] in (profiles.IMAGE_COUNT_SOURCE_DETECTRON2,
                                                   profiles.IMAGE_COUNT_SOURCE_GROUP_RANGES)
    stats = class_counting.compute_class_stats("synthetic_lvis_v1_profile_train", progress=False)
    assert [len(stats.groups[g]) for g in ("head", "body", "tail")] == [405, 461, 337]


def test_lvis_profile_every_category_in_training_with_the_planned_image_counts(lvis_profile):
    root, summary = lvis_profile
    counts = np.asarray(summary["lvis"]["train_image_counts"])
    assert counts.min() >= 1, "every category in at least one training image"
    source = profiles.lvis_v1_categories()
    planned = profiles.scaled_image_counts(source["image_counts"], TINY_LVIS["num_train"])
    assert np.array_equal(counts, planned)
    with open(root / "lvis" / "lvis_v1_train.json") as f:
        train = json.load(f)
    assert [c["image_count"] for c in train["categories"]] == counts.tolist()
    assert np.asarray(summary["lvis"]["val_image_counts"]).min() >= 1
    dicts = DatasetCatalog.get("synthetic_lvis_v1_profile_train")
    assert len(dicts) == TINY_LVIS["num_train"]
    assert MetadataCatalog.get("synthetic_lvis_v1_profile_train").evaluator_type == "lvis"
    assert len(MetadataCatalog.get("synthetic_lvis_v1_profile_val").thing_classes) == 1203


def test_scaled_image_counts_keep_lvis_order_and_fill_the_budget():
    source = np.array([1, 1, 3, 10, 11, 50, 100, 101, 500, 1977], dtype=float)
    scaled = profiles.scaled_image_counts(source, num_images=20, per_image=2.0)
    order = np.argsort(source, kind="stable")
    assert np.all(np.diff(scaled[order]) >= 0), "more LVIS images never means fewer here"
    assert scaled.min() == 1 and scaled.sum() <= 40
    assert scaled[-1] > scaled[0], "the most frequent category gets more images than a rare one"


def test_lvis_profile_needs_room_for_every_category(tmp_path):
    with pytest.raises(DatasetError, match="at least 344 training and 344 validation images"):
        generate_profile(str(tmp_path), "lvis_v1", num_train=100, num_val=400, size=32,
                         progress=False)


def test_absent_profile_set_names_the_command_that_makes_it(tmp_path):
    absent = tmp_path / "synthetic_lvis_v1_profile"
    previous = MetadataCatalog.get("synthetic_lvis_v1_profile_train").synthetic_root
    try:
        register_synthetic_datasets(str(absent), profile="lvis_v1")
        with pytest.raises(DatasetError) as error:
            DatasetCatalog.get("synthetic_lvis_v1_profile_train")
        message = str(error.value)
        assert "\n" not in message
        assert f"--root {absent} --profile lvis_v1" in message
    finally:
        register_synthetic_datasets(previous, profile="lvis_v1")
