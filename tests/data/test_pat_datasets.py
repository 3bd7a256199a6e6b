"""PAT's data: its seeded 0.8 / 0.1 / 0.1 split, Oxford-IIIT Pet from its trimaps and NYUv2 from
``nyu_depth_v2_labeled.mat``, made from synthetic files in the published layouts, prepared by the
scripts as a user runs them, registered, counted and evaluated."""
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from detectron2.data import DatasetCatalog, MetadataCatalog
from longtailseg.data import check_dataset
from longtailseg.data.class_counting import compute_class_stats
from longtailseg.data.datasets.register_nyuv2 import (
    NYU13_CLASSES,
    NYU40_CLASSES,
    LabeledMat,
    register_nyuv2,
)
from longtailseg.data.datasets.register_oxford_pet import OXFORD_PET_CLASSES, register_oxford_pet, trimap_to_label
from longtailseg.data.pat_protocol import (
    iterations_for_epochs,
    load_or_write_split,
    pat_split,
    split_counts,
)
from longtailseg.data.synthetic.pat_formats import write_nyuv2_mat, write_oxford_pet
from longtailseg.errors import DatasetError
from longtailseg.evaluation import LongTailSemSegEvaluator


def _script(folder, name):
    """A datasets/ or tools/ script as a module (its ``main(argv)`` returns the exit status)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name[:-3], os.path.join(REPO, folder, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prepare(script, *args):
    """Run a prepare script in this process; returns its exit status."""
    return _script("datasets", script).main([str(a) for a in args])


def _prepare_in_a_process(script, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "datasets", script), *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _one_line_error(proc, *parts):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:"), proc.stderr
    for part in parts:
        assert part in last, last
    return last


def _refused(capsys, status, *parts):
    """Exit status 2, stderr ending in one ``error:`` line (after any progress bar) naming each
    of ``parts``."""
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in err, err
    for part in parts:
        assert part in last, err


@pytest.fixture(scope="module")
def pat_root(tmp_path_factory):
    """A DETECTRON2_DATASETS-like folder with synthetic oxford_pet/ and nyuv2/ prepared, registered
    under the prefixes t_oxford and t_nyuv2."""
    root = tmp_path_factory.mktemp("pat_data")
    write_oxford_pet(root / "oxford_pet", num_images=12, size=32, seed=0)
    write_nyuv2_mat(root / "nyuv2", num_images=12, size=32, seed=0)
    assert _prepare("prepare_oxford_pet.py", "--root", root) == 0
    assert _prepare("prepare_nyuv2.py", "--root", root) == 0
    names = register_oxford_pet(root / "oxford_pet", prefix="t_oxford")
    names += register_nyuv2(root / "nyuv2", prefix="t_nyuv2")
    yield root
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


# --- the split ------------------------------------------------------------------------------------

def test_split_counts_sum_and_round_like_the_ratios():
    assert split_counts(7349) == [5879, 735, 735]  # Oxford-IIIT Pet's listed images
    assert split_counts(1449) == [1159, 145, 145]  # NYUv2's labelled frames
    assert split_counts(12) == [10, 1, 1]
    for n in range(3, 200):
        counts = split_counts(n)
        assert sum(counts) == n and all(abs(c - r * n) < 1 for c, r in zip(counts, (0.8, 0.1, 0.1)))


def test_split_is_a_seeded_partition():
    keys = [f"img_{i}" for i in range(100)]
    split = pat_split(keys)
    assert split == pat_split(list(reversed(keys)))  # the input order does not matter
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(keys)
    assert [len(split[s]) for s in ("train", "val", "test")] == [80, 10, 10]
    assert pat_split(keys, seed=1)["test"] != split["test"]
    order = np.random.default_rng(0).permutation(100)  # the documented generator, by hand
    assert split["test"] == sorted(sorted(keys)[i] for i in order[90:])


def test_split_file_is_written_once_and_checked(tmp_path):
    path = str(tmp_path / "split.json")
    keys = [f"k{i}" for i in range(20)]
    first = load_or_write_split(path, keys)
    stored = json.load(open(path))
    assert stored["seed"] == 0 and stored["test"] == first["test"]
    assert load_or_write_split(path, list(reversed(keys))) == first
    with pytest.raises(DatasetError, match="splits 20 images but the dataset has 19"):
        load_or_write_split(path, keys[:-1])
    with pytest.raises(DatasetError, match="seed 0 .* not seed 3"):
        load_or_write_split(path, keys, seed=3)
    open(path, "w").write("{")
    with pytest.raises(DatasetError, match="not a readable split file"):
        load_or_write_split(path, keys)


def test_epochs_in_iterations():
    assert iterations_for_epochs(100, 5879, 8) == 100 * 735  # 5879 / 8 = 734.9: 735 steps
    assert iterations_for_epochs(1, 10, 5) == 2
    with pytest.raises(ValueError):
        iterations_for_epochs(1, 10, 0)


# --- Oxford-IIIT Pet ------------------------------------------------------------------------------

def test_trimap_values_map_to_pat_classes():
    trimap = np.array([[1, 2, 3]], np.uint8)  # README: 1 foreground, 2 background, 3 not classified
    label = trimap_to_label(trimap)
    assert [OXFORD_PET_CLASSES[i] for i in label[0]] == ["body", "background", "boundary"]
    with pytest.raises(DatasetError, match="holds the value 4"):
        trimap_to_label(np.array([[1, 4]], np.uint8), "x.png")


def test_oxford_pet_sets_load_prepared_labels(pat_root):
    folder = pat_root / "oxford_pet"
    trainval, test = DatasetCatalog.get("t_oxford_trainval"), DatasetCatalog.get("t_oxford_test")
    assert (len(trainval), len(test)) == (6, 6)
    splits = {s: DatasetCatalog.get(f"t_oxford_pat_{s}") for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [10, 1, 1]
    files = [r["file_name"] for v in splits.values() for r in v]
    assert sorted(files) == sorted(r["file_name"] for r in trainval + test)
    shared = json.load(open(folder / "pat_split_seed0.json"))
    assert [os.path.basename(r["file_name"])[:-4] for r in splits["test"]] == shared["test"]
    for record in splits["train"][:3]:
        name = os.path.basename(record["sem_seg_file_name"])
        trimap = np.asarray(Image.open(folder / "annotations" / "trimaps" / name))
        label = np.asarray(Image.open(record["sem_seg_file_name"]))
        assert np.array_equal(label == 2, trimap == 1) and np.array_equal(label == 1, trimap == 3)
        assert set(np.unique(label)) <= {0, 1, 2}
    check_dataset("t_oxford_pat_train")
    assert MetadataCatalog.get("t_oxford_pat_val").stuff_classes == ["background", "boundary", "body"]


def test_oxford_pet_prepare_errors_are_one_line(tmp_path, capsys):
    # As a user runs it: a process whose stderr ends in one error line, exit status 2.
    _one_line_error(_prepare_in_a_process("prepare_oxford_pet.py", "--root", tmp_path), "trimaps", "does not exist")
    write_oxford_pet(tmp_path / "oxford_pet", num_images=3, size=16)
    bad = tmp_path / "oxford_pet" / "annotations" / "trimaps" / "Abyssinian_1.png"
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(bad)
    _refused(capsys, _prepare("prepare_oxford_pet.py", "--root", tmp_path), str(bad), "value 7")


def test_oxford_pet_without_prepared_labels_names_the_script(tmp_path):
    write_oxford_pet(tmp_path / "oxford_pet", num_images=3, size=16)
    names = register_oxford_pet(tmp_path / "oxford_pet", prefix="t_unprepared")
    try:
        with pytest.raises(DatasetError, match="prepare_oxford_pet.py"):
            DatasetCatalog.get("t_unprepared_pat_train")
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


# --- NYUv2 ----------------------------------------------------------------------------------------

def test_synthetic_mat_has_the_published_layout(pat_root):
    path = pat_root / "nyuv2" / "nyu_depth_v2_labeled.mat"
    assert open(path, "rb").read(19) == b"MATLAB 7.3 MAT-file"
    with h5py.File(path, "r") as f:
        assert f["images"].shape == (12, 3, 32, 24) and f["images"].dtype == np.uint8  # N x 3 x W x H
        assert f["labels"].shape == (12, 32, 24) and f["labels"].dtype == np.uint16
        assert f["depths"].shape == (12, 32, 24) and f["names"].shape == (1, 48)
    with LabeledMat(str(path)) as data:
        assert data.names[:2] == ["wall", "floor"] and data.image(0).shape == (24, 32, 3)


def test_nyuv2_labels_follow_the_class_names(pat_root):
    folder = pat_root / "nyuv2"
    with LabeledMat(str(folder / "nyu_depth_v2_labeled.mat")) as data:
        raw_names = ["unlabeled"] + data.names
        raw, image = data.label(3), data.image(3)
    assert np.array_equal(np.asarray(Image.open(folder / "images" / "0003.png")), image)
    label13 = np.asarray(Image.open(folder / "labels13" / "0003.png"))
    label40 = np.asarray(Image.open(folder / "labels40" / "0003.png"))
    # By name: raw wall -> wall in both; floor -> floor; a vase (raw, mapped to otherprop) -> objects.
    expected13 = {"wall": "wall", "floor": "floor", "ceiling": "ceiling", "vase": "objects", "bed": "bed",
                  "chair": "chair", "door": "wall", "blinds": "window", "unlabeled": "unknown"}
    seen = set()
    for raw_id in np.unique(raw):
        name = raw_names[raw_id]
        pixels = raw == raw_id
        if name in expected13:
            assert {NYU13_CLASSES[v] for v in np.unique(label13[pixels])} == {expected13[name]}
            seen.add(name)
        if name in NYU40_CLASSES:
            assert {NYU40_CLASSES[v] for v in np.unique(label40[pixels])} == {name}
    assert {"wall", "floor"} <= seen
    assert np.array_equal(label40 == 255, raw == 0)
    assert label13.max() < 14 and 255 not in label13  # PAT: unknown is a category, nothing ignored


# Raw class ids (1-based positions in the published .mat's ``names``) of the 37 raw classes that
# carry a 40-class category's own name (NYU40's "refrigerator" is "refridgerator" there).
PUBLISHED_RAW_IDS = {
    3: "cabinet", 4: "ceiling", 5: "chair", 7: "counter", 11: "floor", 15: "paper", 17: "refrigerator",
    19: "table", 21: "wall", 24: "sink", 26: "box", 28: "door", 36: "desk", 42: "shelves", 45: "whiteboard",
    55: "bag", 59: "window", 64: "picture", 80: "blinds", 83: "sofa", 85: "books", 88: "bookshelf",
    89: "curtain", 119: "pillow", 122: "mirror", 123: "shower curtain", 124: "toilet", 135: "towel",
    136: "bathtub", 141: "clothes", 143: "floor mat", 144: "lamp", 157: "bed", 158: "night stand",
    169: "dresser", 172: "television", 331: "person",
}


def test_builtin_894_to_40_table_follows_the_published_names():
    from longtailseg.data.datasets.nyuv2_mapping40 import NYU894_TO_40

    assert len(NYU894_TO_40) == 894 and set(NYU894_TO_40) == set(range(1, 41))
    for raw_id, name in PUBLISHED_RAW_IDS.items():
        assert NYU40_CLASSES[NYU894_TO_40[raw_id - 1] - 1] == name, (raw_id, name)
    # Raw classes without a category of their own name go to the "other" classes: raw 1 "book" ->
    # otherprop, 12 "garbage bin" -> otherfurniture, 62 "light" -> otherstructure.
    assert [NYU40_CLASSES[NYU894_TO_40[i - 1] - 1] for i in (1, 12, 62)] == \
        ["otherprop", "otherfurniture", "otherstructure"]


def test_nyuv2_prepare_uses_the_builtin_table_for_the_published_classes(tmp_path):
    """A .mat with NYU Depth V2's 894 class names and no classMapping40 beside it is prepared with
    the built-in table."""
    from longtailseg.data.datasets.nyuv2_mapping40 import NYU894_TO_40
    from longtailseg.data.synthetic.pat_formats import _char_refs

    folder = tmp_path / "nyuv2"
    write_nyuv2_mat(folder, num_images=3, size=16, seed=1)
    os.remove(folder / "classMapping40.txt")
    with h5py.File(folder / "nyu_depth_v2_labeled.mat", "r+") as f:
        del f["names"]
        f.create_dataset("names", data=_char_refs(f, [f"class {i}" for i in range(1, 895)], "m"))
    assert _prepare("prepare_nyuv2.py", "--root", tmp_path) == 0
    lookup = np.array((0, *NYU894_TO_40))
    with LabeledMat(str(folder / "nyu_depth_v2_labeled.mat")) as data:
        raw = data.label(2)
    label40 = np.asarray(Image.open(folder / "labels40" / "0002.png"))
    assert np.array_equal(label40, np.where(raw == 0, 255, lookup[raw] - 1))
    assert len(np.unique(label40)) > 2


def test_nyuv2_sets_share_one_split(pat_root):
    for mapping, classes in (("13", 14), ("40", 40)):
        sizes = [len(DatasetCatalog.get(f"t_nyuv2_{mapping}_pat_{s}")) for s in ("train", "val", "test")]
        assert sizes == [10, 1, 1]
        assert len(check_dataset(f"t_nyuv2_{mapping}_pat_train").stuff_classes) == classes
    test13 = [os.path.basename(r["file_name"]) for r in DatasetCatalog.get("t_nyuv2_13_pat_test")]
    test40 = [os.path.basename(r["file_name"]) for r in DatasetCatalog.get("t_nyuv2_40_pat_test")]
    assert test13 == test40


def test_nyuv2_prepare_errors_are_one_line(tmp_path, pat_root, capsys):
    folder = tmp_path / "nyuv2"
    folder.mkdir()
    _one_line_error(_prepare_in_a_process("prepare_nyuv2.py", "--root", tmp_path, "--mapping40", "x.txt"),
                    "nyu_depth_v2_labeled.mat", "does not exist")
    (folder / "nyu_depth_v2_labeled.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    _refused(capsys, _prepare("prepare_nyuv2.py", "--root", tmp_path, "--mapping40", "x.txt"), "not an HDF5")
    mat = pat_root / "nyuv2" / "nyu_depth_v2_labeled.mat"
    _refused(capsys, _prepare("prepare_nyuv2.py", "--root", tmp_path, "--mat", mat),
             "48 raw classes", "894", "--mapping40")
    short = tmp_path / "map.txt"
    short.write_text("1 2 3\n")
    _refused(capsys, _prepare("prepare_nyuv2.py", "--root", tmp_path, "--mat", mat, "--mapping40", short),
             "maps 3 raw classes", "48")
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 x\n")
    _refused(capsys, _prepare("prepare_nyuv2.py", "--root", tmp_path, "--mat", mat, "--mapping40", bad),
             str(bad), "not a list of integers")


# --- statistics and evaluation, as for ADE20K -----------------------------------------------------

def test_class_stats_groups_and_evaluation(pat_root, tmp_path):
    stats = compute_class_stats("t_nyuv2_13_pat_train", progress=False)
    assert stats.class_names == NYU13_CLASSES and sum(stats.counts) == 10 * 24 * 32
    assert NYU13_CLASSES.index("wall") in stats.groups["head"] and stats.groups["tail"]
    oxford = compute_class_stats("t_oxford_pat_train", head_ratio=0.3, tail_ratio=0.1, progress=False)
    shares = np.array(oxford.counts) / sum(oxford.counts)
    assert shares[0] > shares[2] > shares[1]  # background > body > boundary: three classes, long-tailed
    assert oxford.groups["tail"] == [1]

    for dataset, stats_of in (("t_nyuv2_13_pat_val", stats), ("t_oxford_pat_val", oxford)):
        evaluator = LongTailSemSegEvaluator(dataset, distributed=False, output_dir=str(tmp_path),
                                            class_groups=stats_of.groups)
        evaluator.reset()
        for record in DatasetCatalog.get(dataset):
            label = torch.as_tensor(np.asarray(Image.open(record["sem_seg_file_name"])).astype(np.int64))
            scores = torch.nn.functional.one_hot(label, len(stats_of.class_names)).permute(2, 0, 1).float()
            evaluator.process([{"file_name": record["file_name"]}], [{"sem_seg": scores}])
        results = evaluator.evaluate()["sem_seg"]
        assert results["mIoU"] == pytest.approx(100) and results["pACC"] == pytest.approx(100)
        assert results["DiceErr"] == pytest.approx(0)


def test_make_synthetic_data_writes_the_pat_formats(tmp_path):
    tool = _script("tools", "make_synthetic_data.py")
    assert tool.main(["--root", str(tmp_path / "pets"), "--format", "oxford_pet", "--num-images", "4",
                      "--size", "16"]) == 0
    assert sorted(os.listdir(tmp_path / "pets" / "annotations")) == ["list.txt", "test.txt", "trainval.txt", "trimaps"]
    assert len(os.listdir(tmp_path / "pets" / "images")) == 4
    assert tool.main(["--root", str(tmp_path / "pets"), "--format", "oxford_pet"]) == 2  # exists, no --force
    assert tool.main(["--root", str(tmp_path / "nyu"), "--format", "nyuv2", "--num-classes", "30"]) == 2
    assert tool.main(["--root", str(tmp_path / "nyu"), "--format", "nyuv2", "--num-images", "2"]) == 2
    assert not os.path.exists(tmp_path / "nyu")


def test_the_protocol_applies_to_any_registered_dataset(datasets_root, tmp_path):
    from longtailseg.data.pat_protocol import register_pat_protocol

    sources = ["synthetic_ade_sem_seg_train", "synthetic_ade_sem_seg_val"]
    names = register_pat_protocol(sources, "t_ade", str(tmp_path / "split.json"))
    try:
        assert names == ["t_ade_pat_train", "t_ade_pat_val", "t_ade_pat_test"]
        everything = sorted(r["file_name"] for s in sources for r in DatasetCatalog.get(s))
        parts = [DatasetCatalog.get(n) for n in names]
        assert sorted(r["file_name"] for p in parts for r in p) == everything
        assert [len(p) for p in parts] == split_counts(len(everything))
        metadata = check_dataset("t_ade_pat_val")
        assert metadata.stuff_classes == MetadataCatalog.get(sources[0]).stuff_classes
        assert not hasattr(metadata, "image_root")  # a split is part of a folder: no folder checks
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    few = register_pat_protocol(["t_oxford_test"], "t_few", str(tmp_path / "few.json"))
    try:
        with pytest.raises(DatasetError, match="test split of 6 images is empty"):
            DatasetCatalog.get("t_few_pat_test")
    finally:
        for name in few:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_pat_iterations_tool(pat_root, capsys):
    from conftest import run_tool

    # As a user runs it: oxford_pet_pat_train registered from DETECTRON2_DATASETS at import.
    proc = run_tool("pat_iterations.py", "--dataset", "oxford_pet_pat_train", "--epochs", 100, "--batch", 4,
                    datasets_root=pat_root)
    assert "10 images, 100 epochs at batch 4: SOLVER.MAX_ITER 300 (3 iterations per epoch)" in proc.stdout
    tool = _script("tools", "pat_iterations.py")
    assert tool.main(["--images", "5879", "--batch", "8"]) == 0
    assert "SOLVER.MAX_ITER 73500" in capsys.readouterr().out
    _refused(capsys, tool.main(["--images", "10", "--batch", "0"]), "batch >= 1")


@pytest.mark.parametrize("family, classes", [("oxford_pet", 3), ("nyuv2_13", 14), ("nyuv2_40", 40),
                                             ("synthetic_oxford_pet", 3), ("synthetic_nyuv2_13", 14),
                                             ("synthetic_nyuv2_40", 40)])
def test_the_configs_names_are_registered_without_data(family, classes):
    for split in ("train", "val", "test"):
        metadata = check_dataset(f"{family}_pat_{split}")  # metadata only: no file is needed
        assert len(metadata.stuff_classes) == classes and metadata.ignore_label == 255
    if family.endswith("oxford_pet"):
        check_dataset(f"{family}_trainval")
        check_dataset(f"{family}_test")
