"""The synthetic data generator: formats that Detectron2 and LVIS read, a steep long tail and
writes that never leave a partial data set."""
import longtailseg  # noqa: F401  (registers the LongTailSeg components)

import glob
import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest
from PIL import Image

from longtailseg.data.synthetic import classes as synthetic_classes
from longtailseg.data.synthetic import generator, layout, lvis, semantic
from longtailseg.errors import DatasetError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(num_train=12, num_val=6, size=32, progress=False)
NUM_CLASSES = 19
# pycocotools' mask decoding (lvis.ann_to_mask) trips a numpy 2 deprecation that is not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _file_hashes(root):
    hashes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def _labels(root, ade_split):
    paths = sorted(glob.glob(f"{root}/ADEChallengeData2016/annotations_detectron2/{ade_split}/*"))
    return paths, [np.asarray(Image.open(p)) for p in paths]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny data set with the default 19 classes: (root, summary)."""
    root = str(tmp_path_factory.mktemp("synthetic"))
    return root, generator.generate(root, seed=0, **TINY)


# --- reproducibility -----------------------------------------------------------------------------


def test_same_seed_gives_identical_files_and_another_seed_does_not(tiny, tmp_path):
    root, _ = tiny
    first = _file_hashes(root)
    again = generator.generate(str(tmp_path / "again"), seed=0, **TINY)
    assert again["semantic"] == tiny[1]["semantic"]
    assert _file_hashes(tmp_path / "again") == first
    other = _file_hashes(generator.generate(str(tmp_path / "other"), seed=1, **TINY)["root"])
    assert other.keys() == first.keys()
    differing = [path for path in first if first[path] != other[path]]
    # every image differs; only the files without random content (classes list aside) match
    assert all(path in differing for path in first if path.endswith((".jpg", "leftImg8bit.png")))


# --- layouts -------------------------------------------------------------------------------------


def test_writes_every_layout_and_the_classes_file(tiny):
    root, _ = tiny
    assert sorted(os.listdir(root)) == sorted(layout.OUTPUT_ENTRIES)
    ade = os.path.join(root, "ADEChallengeData2016")
    assert len(os.listdir(f"{ade}/images/training")) == 12
    assert len(os.listdir(f"{ade}/annotations_detectron2/validation")) == 6
    assert os.path.isfile(f"{ade}/images/training/ADE_train_00000001.jpg")
    assert os.path.isfile(f"{ade}/annotations_detectron2/validation/ADE_val_00000006.png")
    gt = f"{root}/cityscapes/gtFine/train/synthburg/synthburg_000000_000011_gtFine_"
    for suffix in ("labelTrainIds.png", "labelIds.png", "instanceIds.png", "polygons.json"):
        assert os.path.isfile(gt + suffix), suffix
    with open(gt + "polygons.json") as f:
        assert json.load(f) == {"imgHeight": 32, "imgWidth": 32, "objects": []}
    assert len(os.listdir(f"{root}/coco/train2017")) == 12
    assert len(os.listdir(f"{root}/coco/val2017")) == 6

    classes = layout.read_synthetic_classes(root)
    assert classes["format"] == "longtailseg-synthetic/1"
    assert classes["num_classes"] == NUM_CLASSES
    assert classes["splits"] == {"train": 12, "val": 6}
    assert (classes["seed"], classes["size"]) == (0, 32)
    names = classes["stuff_classes"]
    assert len(set(names)) == NUM_CLASSES and classes["thing_classes"] == names
    assert names[0] == "red plain"
    assert len(classes["stuff_colors"]) == NUM_CLASSES
    assert len({tuple(c) for c in classes["stuff_colors"]}) == NUM_CLASSES


def test_labels_are_class_indices_or_ignore_and_match_their_images(tiny):
    root, _ = tiny
    for ade_split in ("training", "validation"):
        paths, labels = _labels(root, ade_split)
        for path, label in zip(paths, labels):
            assert label.dtype == np.uint8 and label.shape == (32, 32)
            image_path = path.replace("annotations_detectron2", "images").replace(".png", ".jpg")
            image = Image.open(image_path)
            assert image.mode == "RGB" and image.size == (32, 32)
            values = set(np.unique(label).tolist())
            assert values <= set(range(NUM_CLASSES)) | {255}
    _, val_labels = _labels(root, "validation")
    present = set(np.unique(np.concatenate([v.ravel() for v in val_labels])).tolist())
    assert present >= set(range(NUM_CLASSES)), "every class must occur in val"


def test_cityscapes_files_hold_the_same_labels_with_cityscapes_ids(tiny):
    from cityscapesscripts.helpers.labels import trainId2label

    root, _ = tiny
    _, ade_labels = _labels(root, "validation")
    gt = f"{root}/cityscapes/gtFine/val/synthstadt/synthstadt_000000_{{:06d}}_gtFine_"
    for index, ade_label in enumerate(ade_labels):
        train_ids = np.asarray(Image.open(gt.format(index) + "labelTrainIds.png"))
        label_ids = np.asarray(Image.open(gt.format(index) + "labelIds.png"))
        instance_ids = np.asarray(Image.open(gt.format(index) + "instanceIds.png"))
        np.testing.assert_array_equal(train_ids, ade_label)
        for train_id in np.unique(train_ids):
            expected = 0 if train_id == 255 else trainId2label[int(train_id)].id
            assert set(np.unique(label_ids[train_ids == train_id])) == {expected}
        np.testing.assert_array_equal(instance_ids, label_ids)
    image = Image.open(f"{root}/cityscapes/leftImg8bit/val/synthstadt/"
                       "synthstadt_000000_000000_leftImg8bit.png")
    assert image.mode == "RGB" and image.size == (32, 32)


def test_other_class_counts_keep_train_ids_as_label_ids_and_cover_val(tmp_path):
    summary = generator.generate(str(tmp_path), num_classes=7, **TINY)
    gt = f"{tmp_path}/cityscapes/gtFine/train/synthburg/synthburg_000000_000003_gtFine_"
    label_ids = np.asarray(Image.open(gt + "labelIds.png"))
    np.testing.assert_array_equal(label_ids, np.asarray(Image.open(gt + "labelTrainIds.png")))
    assert all(count > 0 for count in summary["semantic"]["val_pixel_counts"])
    assert len(summary["semantic"]["val_pixel_counts"]) == 7
    assert all(count > 0 for count in summary["lvis"]["val_image_counts"])


def test_detectron2_loads_the_ade_and_cityscapes_layouts(tiny):
    from detectron2.data.datasets import load_sem_seg
    from detectron2.data.datasets.cityscapes import load_cityscapes_semantic

    root, _ = tiny
    ade = load_sem_seg(
        f"{root}/ADEChallengeData2016/annotations_detectron2/training",
        f"{root}/ADEChallengeData2016/images/training",
        gt_ext="png",
        image_ext="jpg",
    )
    assert len(ade) == 12
    cityscapes = load_cityscapes_semantic(
        f"{root}/cityscapes/leftImg8bit/val", f"{root}/cityscapes/gtFine/val"
    )
    assert len(cityscapes) == 6
    for record in ade + cityscapes:
        assert os.path.isfile(record["file_name"]) and os.path.isfile(record["sem_seg_file_name"])
    assert all(r["sem_seg_file_name"].endswith("_gtFine_labelTrainIds.png") for r in cityscapes)
    assert {(r["height"], r["width"]) for r in cityscapes} == {(32, 32)}


# --- the long tail -------------------------------------------------------------------------------


def test_default_schedule_has_head_body_and_tail_classes():
    classes = synthetic_classes.build_classes(NUM_CLASSES)
    assert [c.group for c in classes].count("head") == 5
    assert [c.group for c in classes].count("body") == 7
    assert [c.group for c in classes].count("tail") == 7
    # the family's rarer members: the family colour mixed towards white / black per level
    red = [c for c in classes if c.family == "red"]
    assert red[0].texture == "plain" and len({c.base_color for c in red}) == len(red)
    lightness = [sum(c.base_color) for c in red]
    assert lightness[1] > lightness[0] > lightness[2] and lightness[3] > lightness[1]
    assert len({c.texture for c in red}) == len(red)
    _, shares, diameters = synthetic_classes.semantic_schedule(classes)
    assert np.all(np.diff(shares) < 0) and np.all(np.diff(diameters) < 0)
    assert np.all(shares[:7] > 0.001) and np.all(shares[7:] < 0.001)

    image_counts = np.round(synthetic_classes.lvis_image_fractions(classes) * 400)
    frequencies = [synthetic_classes.lvis_frequency(int(n)) for n in image_counts]
    assert frequencies == sorted(frequencies, key="fcr".index)  # f... then c... then r...
    assert all(frequencies.count(group) >= 3 for group in "rcf")


def test_training_pixel_shares_follow_a_steep_long_tail(tmp_path):
    summary = generator.generate(str(tmp_path), num_train=120, num_val=6, size=48, progress=False)
    # the summary is what the label files hold
    counts = np.zeros(256, dtype=np.int64)
    for label in _labels(str(tmp_path), "training")[1]:
        counts += np.bincount(label.ravel(), minlength=256)
    assert counts[:NUM_CLASSES].tolist() == summary["semantic"]["train_pixel_counts"]
    assert counts[255] == summary["semantic"]["train_ignore_pixels"]

    shares = counts[:NUM_CLASSES] / counts[:NUM_CLASSES].sum()
    assert shares[0] == shares.max() > 0.2
    assert 0 < shares.min() < 0.001
    assert (shares > 0.01).sum() >= 4
    assert ((shares >= 0.001) & (shares <= 0.01)).sum() >= 5
    assert (shares < 0.001).sum() >= 5
    groups = np.array(summary["class_groups"])
    assert shares[groups == "head"].min() > shares[groups == "body"].max()
    assert shares[groups == "body"].min() > shares[groups == "tail"].max()
    assert 0.01 <= counts[255] / counts.sum() <= 0.04  # a thin ignore outline, not more

    lines = generator.format_summary(summary)
    assert "max share" in lines[1] and "(red plain)" in lines[1]


# --- LVIS ----------------------------------------------------------------------------------------


def test_lvis_json_loads_with_lvis_and_detectron2(tiny):
    from detectron2.data.datasets.lvis import load_lvis_json
    from lvis import LVIS

    root, summary = tiny
    train, val = (LVIS(f"{root}/lvis/lvis_v1_{split}.json") for split in ("train", "val"))
    assert train.dataset["categories"] == val.dataset["categories"]
    categories = train.dataset["categories"]
    assert [c["id"] for c in categories] == list(range(1, NUM_CLASSES + 1))
    assert {"info", "licenses", "images", "annotations", "categories"} <= train.dataset.keys()
    for category in categories:
        image_ids = set(train.cat_img_map[category["id"]])
        assert category["image_count"] == len(image_ids) >= 1
        assert category["instance_count"] == len(train.cat_img_map[category["id"]])
        assert category["frequency"] == synthetic_classes.lvis_frequency(category["image_count"])
        assert category["synset"].endswith(".n.01") and category["synonyms"] == [category["name"]]
        assert len(val.cat_img_map[category["id"]]) >= 1, "every category must occur in val"
    assert summary["lvis"]["frequencies"] == [c["frequency"] for c in categories]

    for lvis_api in (train, val):
        for ann in lvis_api.dataset["annotations"]:
            mask = lvis_api.ann_to_mask(ann)
            assert mask.sum() == ann["area"] > 0
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 32 and y + h <= 32
        for image in lvis_api.dataset["images"]:
            assert "://" not in image["coco_url"]
            present = {a["category_id"] for a in lvis_api.img_ann_map[image["id"]]}
            assert not present & set(image["neg_category_ids"])
            assert image["not_exhaustive_category_ids"] == []

    for split, size in (("train", 12), ("val", 6)):
        records = load_lvis_json(f"{root}/lvis/lvis_v1_{split}.json", root + "/coco/")
        assert len(records) == size
        for record in records:
            assert os.path.isfile(record["file_name"]), record["file_name"]
            assert f"{os.sep}{split}2017{os.sep}" in record["file_name"]
            assert all(0 <= obj["category_id"] < NUM_CLASSES for obj in record["annotations"])


def test_lvis_instances_do_not_overlap_and_show_their_category(tiny):
    from lvis import LVIS

    root, _ = tiny
    lvis_api = LVIS(f"{root}/lvis/lvis_v1_train.json")
    for image_id, anns in lvis_api.img_ann_map.items():
        masks = np.stack([lvis_api.ann_to_mask(a) for a in anns]).astype(int)
        assert masks.sum(axis=0).max() <= 1


# --- safe writing --------------------------------------------------------------------------------


def test_refuses_to_overwrite_without_force(tiny):
    root, _ = tiny
    before = _file_hashes(root)
    with pytest.raises(DatasetError) as error:
        generator.generate(root, seed=3, **TINY)
    message = str(error.value)
    assert "\n" not in message and "--force" in message
    assert os.path.join(root, "ADEChallengeData2016") in message
    assert _file_hashes(root) == before
    assert not glob.glob(os.path.join(root, layout.STAGING_PREFIX + "*"))


def test_force_replaces_old_data(tmp_path):
    generator.generate(str(tmp_path), seed=0, **TINY)
    before = _file_hashes(tmp_path)
    generator.generate(str(tmp_path), seed=5, force=True, **TINY)
    after = _file_hashes(tmp_path)
    assert after.keys() == before.keys() and after != before
    assert sorted(os.listdir(tmp_path)) == sorted(layout.OUTPUT_ENTRIES)


def _fail_on_call(monkeypatch, module, name, call_number):
    original = getattr(module, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call_number:
            raise RuntimeError("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_crash_mid_way_leaves_nothing_behind(tmp_path, monkeypatch):
    _fail_on_call(monkeypatch, semantic, "save_png", 30)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generator.generate(str(tmp_path), **TINY)
    assert os.listdir(tmp_path) == []


def test_crash_with_force_keeps_the_old_data(tmp_path, monkeypatch):
    generator.generate(str(tmp_path), **TINY)
    before = _file_hashes(tmp_path)
    _fail_on_call(monkeypatch, lvis, "save_jpeg", 10)  # in the LVIS images
    with pytest.raises(RuntimeError, match="simulated crash"):
        generator.generate(str(tmp_path), seed=9, force=True, **TINY)
    assert _file_hashes(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == sorted(layout.OUTPUT_ENTRIES)


def test_crash_while_moving_into_place_restores_the_old_data(tmp_path, monkeypatch):
    generator.generate(str(tmp_path), **TINY)
    before = _file_hashes(tmp_path)
    # 5 moves take the old entries out; fail on the 3rd move of a new entry into place
    _fail_on_call(monkeypatch, os, "replace", 5 + 3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        generator.generate(str(tmp_path), seed=9, force=True, **TINY)
    monkeypatch.undo()
    assert _file_hashes(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == sorted(layout.OUTPUT_ENTRIES)


def test_missing_classes_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(DatasetError) as error:
        layout.read_synthetic_classes(str(tmp_path))
    message = str(error.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), "synthetic_classes.json") in message
    assert f"python tools/make_synthetic_data.py --root {tmp_path}" in message


# --- command line --------------------------------------------------------------------------------


def _cli():
    path = os.path.join(REPO, "tools", "make_synthetic_data.py")
    spec = importlib.util.spec_from_file_location("make_synthetic_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "arguments, expected",
    [
        (["--num-classes", "5"], "number of classes must be in 6..150"),
        (["--num-images", "4"], "19 classes need at least 5 training and 5 validation images"),
        (["--num-classes", "40", "--num-val-images", "9"], "at least 10 training"),
        (["--seed", "-1"], "seed must be a non-negative integer"),
        (["--size", "16"], "size must be at least 32"),
    ],
)
def test_cli_rejects_bad_arguments_in_one_line(tmp_path, capsys, arguments, expected):
    status = _cli().main(["--root", str(tmp_path)] + arguments)
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.startswith("error: ") and expected in err and "\n" not in err
    assert os.listdir(tmp_path) == []


def test_cli_writes_and_summarises(tmp_path, capsys):
    arguments = ["--root", str(tmp_path), "--num-images", "12", "--num-val-images", "6",
                 "--size", "32", "--seed", "2"]
    assert _cli().main(arguments) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"wrote synthetic long-tailed data to {tmp_path} in ")
    assert lines[1].startswith("semantic (train, 12 images 32x32): 19 classes; max share ")
    assert lines[2].startswith("lvis (train): 19 categories: ")
    assert layout.read_synthetic_classes(str(tmp_path))["seed"] == 2
    assert _cli().main(arguments) == 2  # second run without --force
