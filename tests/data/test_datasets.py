"""data/datasets/: registration reads no file, metadata kept in a file is read on first use (one
line naming the file when it cannot be), and the checks every registered dataset must pass."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, TINY_TRAINING, run_tool
from detectron2.data import DatasetCatalog, MetadataCatalog
from longtailseg.data import check_dataset, class_counting, register_synthetic_datasets
from longtailseg.data.datasets import check_lvis_frequencies
from longtailseg.data.datasets.register_synthetic import SyntheticMetadata
from longtailseg.data.synthetic.generator import generate_profile
from longtailseg.errors import DatasetError

CONFIG = os.path.join(REPO, "configs", "synthetic", "deeplab_v3_plus.yaml")
STAGE2_CONFIG = os.path.join(REPO, "configs", "synthetic", "disalign_deeplab.yaml")


def _run_python(args, datasets_root, cwd=REPO, timeout=300):
    """A Python command as a user runs it; ``datasets_root`` None: DETECTRON2_DATASETS unset."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("DETECTRON2_DATASETS", None)
    if datasets_root is not None:
        env["DETECTRON2_DATASETS"] = str(datasets_root)
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _one_line_error(proc, *names):
    """Exit 2, no traceback, the last line of stderr an ``error:`` line naming each of ``names``."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:"), proc.stderr[-3000:]
    for name in names:
        assert str(name) in last, last
    return last


def _train_net(*args, datasets_root, cwd=REPO):
    return _run_python([os.path.join(REPO, "tools", "train_net.py"), *args], datasets_root, cwd=cwd)


def _malformed_root(tmp_path):
    root = tmp_path / "datasets"
    (root / "synthetic").mkdir(parents=True)
    classes_file = root / "synthetic" / "synthetic_classes.json"
    classes_file.write_text("{not json")
    return root, classes_file


# --- registration reads no file ------------------------------------------------------------------

# Records every file or folder under $DETECTRON2_DATASETS that `import longtailseg` opens or lists.
_AUDITED_IMPORT = """
import os, sys
root = os.path.realpath(os.environ["DETECTRON2_DATASETS"])
touched = []
def audit(event, args):
    if event in ("open", "os.listdir", "os.scandir") and args and isinstance(args[0], (str, bytes)):
        path = os.fsdecode(args[0])
        if os.path.realpath(path).startswith(root):
            touched.append((event, path))
sys.addaudithook(audit)
import longtailseg
from detectron2.data import DatasetCatalog, MetadataCatalog
assert "synthetic_lvis_train" in DatasetCatalog.list()
print(MetadataCatalog.get("synthetic_lvis_train").json_file)
print("touched:", touched)
"""


def test_import_reads_no_dataset_file(tmp_path):
    root, classes_file = _malformed_root(tmp_path)
    proc = _run_python(["-c", _AUDITED_IMPORT], root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "touched: []"
    assert str(root / "synthetic" / "lvis" / "lvis_v1_train.json") in proc.stdout


def test_malformed_classes_file_is_one_line_from_train_net(tmp_path):
    root, classes_file = _malformed_root(tmp_path)
    proc = _train_net("--config-file", CONFIG, *TINY_TRAINING, "OUTPUT_DIR", tmp_path / "out",
                      datasets_root=root)
    line = _one_line_error(proc, classes_file, "--force")
    assert "unreadable" in line


# --- metadata read on first use ------------------------------------------------------------------

def test_class_names_are_read_on_first_access(datasets_root, tmp_path):
    name = "synthetic_ade_sem_seg_train"
    metadata = MetadataCatalog.get(name)
    assert isinstance(metadata, SyntheticMetadata)
    register_synthetic_datasets(str(tmp_path / "later"))
    try:
        metadata = MetadataCatalog.get(name)
        assert "stuff_classes" not in vars(metadata)  # registered, nothing read
        with pytest.raises(DatasetError) as error:  # not an AttributeError that hasattr() hides
            hasattr(metadata, "stuff_classes")
        assert str(tmp_path / "later" / "synthetic_classes.json") in str(error.value)
        assert "\n" not in str(error.value)
        # Data generated after registration is found by the same registration.
        os.symlink(datasets_root / "synthetic", tmp_path / "later")
        assert len(metadata.stuff_classes) == len(metadata.stuff_colors) == 19
        assert MetadataCatalog.get(name).get("stuff_classes") == metadata.stuff_classes
        assert len(DatasetCatalog.get(name)) == 24
        again = pickle.loads(pickle.dumps(metadata))  # what a spawned process or a copy gets
        assert again.stuff_classes == metadata.stuff_classes and type(again) is type(metadata)
    finally:
        register_synthetic_datasets(str(datasets_root / "synthetic"))


def test_a_key_set_explicitly_reads_no_file(tmp_path, datasets_root):
    register_synthetic_datasets(str(tmp_path / "absent"))
    try:
        metadata = MetadataCatalog.get("synthetic_cityscapes_sem_seg_val")
        metadata.set(stuff_classes=["a", "b"], stuff_colors=[(0, 0, 0), (1, 1, 1)])
        assert metadata.stuff_classes == ["a", "b"] and metadata.get("thing_classes") is None
    finally:
        register_synthetic_datasets(str(datasets_root / "synthetic"))


def test_detectron2_visualizer_reads_the_lazy_metadata(datasets_root):
    from detectron2.utils.visualizer import Visualizer

    register_synthetic_datasets(str(datasets_root / "synthetic"))  # nothing read yet
    metadata = MetadataCatalog.get("synthetic_ade_sem_seg_val")
    image = Visualizer(np.zeros((32, 32, 3), np.uint8), metadata).draw_sem_seg(
        np.arange(32 * 32).reshape(32, 32) % 19).get_image()
    assert image.shape == (32, 32, 3)


# --- the checks of a registered dataset ----------------------------------------------------------

@pytest.fixture
def registered():
    """Register throw-away sets: ``registered(name, **metadata)``; removed after the test."""
    names = []

    def register(name, **metadata):
        DatasetCatalog.register(name, lambda: [])
        MetadataCatalog.get(name).set(**metadata)
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _refused(name, *parts, check=check_dataset):
    with pytest.raises(DatasetError) as error:
        check(name)
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


def test_registered_sets_pass(datasets_root):
    for name in ("synthetic_ade_sem_seg_train", "synthetic_cityscapes_sem_seg_val", "synthetic_lvis_train",
                 "ade20k_sem_seg_train", "cityscapes_fine_sem_seg_val", "lvis_v1_train"):
        check_dataset(name)  # metadata only: Detectron2's builtin sets need no file for it
    categories = check_lvis_frequencies("synthetic_lvis_train")
    assert [c["id"] for c in categories] == sorted(c["id"] for c in categories)


def test_an_unregistered_set_is_refused():
    _refused("no_such_set_train", "'no_such_set_train'", "not registered", "synthetic_ade_sem_seg_train")


@pytest.mark.parametrize("evaluator_type", [None, "coco"])
def test_an_unknown_evaluator_type_is_refused(registered, evaluator_type):
    metadata = {} if evaluator_type is None else {"evaluator_type": evaluator_type}
    name = registered(f"lt_check_evaluator_{evaluator_type}", stuff_classes=["a"], **metadata)
    _refused(name, name, "'evaluator_type'", repr(evaluator_type), "sem_seg", "lvis")


@pytest.mark.parametrize("evaluator_type", ["sem_seg", "cityscapes_sem_seg"])
@pytest.mark.parametrize("key", ["stuff_classes", "ignore_label"])
def test_a_sem_seg_set_needs_class_names_and_ignore_label(registered, evaluator_type, key):
    metadata = {"stuff_classes": ["a", "b"], "ignore_label": 255}
    del metadata[key]
    name = registered(f"lt_check_{evaluator_type}_{key}", evaluator_type=evaluator_type, **metadata)
    _refused(name, name, repr(key), f".set({key}=")


@pytest.mark.parametrize("key", ["thing_classes", "json_file"])
def test_an_lvis_set_needs_class_names_and_json_file(registered, key):
    metadata = {"thing_classes": ["a", "b"], "json_file": "/x/lvis.json"}
    del metadata[key]
    name = registered(f"lt_check_lvis_{key}", evaluator_type="lvis", **metadata)
    _refused(name, name, repr(key))


def _lvis_json(path, frequencies):
    categories = [{"id": i + 1, "name": f"c{i}", **({"frequency": f} if f else {})}
                  for i, f in enumerate(frequencies)]
    path.write_text(json.dumps({"categories": categories, "images": [], "annotations": []}))
    return path


def test_an_lvis_json_needs_each_category_frequency(registered, tmp_path):
    path = _lvis_json(tmp_path / "lvis.json", ["f", None, "r"])
    name = registered("lt_check_lvis_frequency", evaluator_type="lvis", thing_classes=["a", "b", "c"],
                      json_file=str(path))
    check_dataset(name)  # the json is read only by check_lvis_frequencies
    _refused(name, str(path), "'frequency'", "'c1'", check=check_lvis_frequencies)


def test_an_lvis_json_must_exist_and_match_the_class_names(registered, tmp_path):
    absent = registered("lt_check_lvis_absent", evaluator_type="lvis", thing_classes=["a"],
                        json_file=str(tmp_path / "absent.json"))
    _refused(absent, absent, str(tmp_path / "absent.json"), "does not exist", check=check_lvis_frequencies)
    path = _lvis_json(tmp_path / "lvis.json", ["f", "c"])
    other = registered("lt_check_lvis_count", evaluator_type="lvis", thing_classes=["a"], json_file=str(path))
    _refused(other, other, "2 categories", "'thing_classes'", check=check_lvis_frequencies)


def test_evaluator_and_class_count_apply_the_checks(registered, tmp_path):
    from detectron2.config import get_cfg
    from longtailseg import add_longtailseg_config
    from longtailseg.evaluation import build_evaluator

    cfg = get_cfg()
    add_longtailseg_config(cfg)
    cfg.OUTPUT_DIR = str(tmp_path)
    coco = registered("lt_check_coco_train", evaluator_type="coco", thing_classes=["a"])
    _refused(coco, coco, "'evaluator_type'", check=lambda name: build_evaluator(cfg, name))
    _refused(coco, coco, "'evaluator_type'", check=lambda name: class_counting.compute_class_stats(name))
    no_names = registered("lt_check_no_names_train", evaluator_type="sem_seg", ignore_label=255)
    _refused(no_names, no_names, "'stuff_classes'",
             check=lambda name: class_counting.compute_class_stats(name, progress=False))


# --- points 6 and 7 of issue 21: one line, exit 2 ------------------------------------------------

def test_another_profile_in_the_default_folder_is_one_line(tmp_path):
    root = tmp_path / "datasets"
    generate_profile(str(root / "synthetic"), "ade20k", num_train=40, num_val=32, size=32, progress=False)
    classes_file = root / "synthetic" / "synthetic_classes.json"
    imported = _run_python(["-c", "import longtailseg"], root)
    assert imported.returncode == 0 and imported.stderr.count("Traceback") == 0, imported.stderr[-3000:]
    proc = _train_net("--config-file", CONFIG, *TINY_TRAINING, "OUTPUT_DIR", tmp_path / "out",
                      datasets_root=root)
    line = _one_line_error(proc, classes_file, "ade20k profile", "--force", "DETECTRON2_DATASETS")
    # The tool refuses to write it there in the first place.
    proc = run_tool("make_synthetic_data.py", "--root", root / "synthetic", "--profile", "ade20k",
                    check=False)
    line = _one_line_error(proc, root / "synthetic_ade20k_profile")
    assert "default profile" in line


@pytest.mark.parametrize("where", ["elsewhere", "unset"])
def test_eval_only_without_the_data_is_one_line(where, trained_baseline, tmp_path):
    datasets_root = tmp_path / "elsewhere" if where == "elsewhere" else None
    expected = (datasets_root or tmp_path / "datasets") / "synthetic" / "synthetic_classes.json"
    proc = _train_net("--config-file", CONFIG, "--eval-only", *TINY_TRAINING,
                      "MODEL.WEIGHTS", trained_baseline / "model_final.pth", "OUTPUT_DIR", tmp_path / "out",
                      datasets_root=datasets_root, cwd=tmp_path)
    _one_line_error(proc, expected, "make_synthetic_data.py", "DETECTRON2_DATASETS")


def test_a_second_stage_without_the_data_is_one_line(trained_baseline, tmp_path):
    proc = _train_net("--config-file", STAGE2_CONFIG, *TINY_TRAINING, "SOLVER.MAX_ITER", 1,
                      "MODEL.WEIGHTS", trained_baseline / "model_final.pth", "OUTPUT_DIR", tmp_path / "out",
                      datasets_root=None, cwd=tmp_path)
    expected = tmp_path / "datasets" / "synthetic" / "synthetic_classes.json"
    _one_line_error(proc, expected, "make_synthetic_data.py")
