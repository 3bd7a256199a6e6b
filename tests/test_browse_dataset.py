"""tools/browse_dataset.py: drawings of a split's labels, its class histogram (the project's class
counting), one-line errors, and Detectron2's own tools/visualize_data.py run on our configs."""
import glob
import os
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from conftest import REPO, TINY_TRAINING, run_tool
from longtailseg.data.class_counting import compute_class_stats

sys.path.insert(0, os.path.join(REPO, "tools"))
import browse_dataset  # noqa: E402  (a tool, not a package module)


def browse(capsys, *args):
    """Run the tool in this process; (exit status, stdout, stderr)."""
    try:
        browse_dataset.run([str(a) for a in args])
        status = 0
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def histogram_rows(out):
    """{class name: (group, count, images)} from the printed class table."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].isdigit():
            rows[cells[2]] = (cells[3], int(cells[4].replace(",", "")), int(cells[6]))
    return rows


def panels(png, image_path):
    """(raw panel, drawn panel, the raw image scaled as drawn) of a drawing."""
    drawing = np.asarray(Image.open(png).convert("RGB"))
    raw = Image.open(image_path).convert("RGB")
    scale = max(1.0, browse_dataset._MIN_SHORT_SIDE / min(raw.size))
    size = (int(raw.width * scale), int(raw.height * scale))
    expected = np.asarray(raw.resize(size, Image.NEAREST))
    w, h = size
    return drawing[:h, :w], drawing[:h, w + 4:2 * w + 4], expected, scale


def test_sem_seg_split_drawn_with_its_labels_and_the_histogram_of_class_counting(datasets_root, tmp_path, capsys):
    status, out, err = browse(capsys, "--dataset", "synthetic_ade_sem_seg_train", "--num-images", 2, "--top", -1,
                              "--workers", 1, "--output-dir", tmp_path)
    assert status == 0, err
    stats = compute_class_stats("synthetic_ade_sem_seg_train", num_workers=1, progress=False)
    rows = histogram_rows(out)
    assert len(rows) == stats.num_classes == 19
    group_of = {c: g for g, ids in stats.groups.items() for c in ids}
    for c, name in enumerate(stats.class_names):
        assert rows[name] == (group_of[c], stats.counts[c], stats.image_counts[c])
    counts = [count for _, count, _ in histogram_rows(out).values()]
    assert counts == sorted(counts, reverse=True)  # most frequent first
    for group in ("head", "body", "tail"):  # the group table of tools/compute_class_stats.py
        assert f"| {group:<7} | {len(stats.groups[group]):>9} |" in out
    pngs = sorted(glob.glob(str(tmp_path / "*.png")))
    assert len(pngs) == 2
    image = os.path.join(datasets_root, "synthetic", "ADEChallengeData2016", "images", "training",
                         os.path.basename(pngs[0]).replace(".png", ".jpg"))
    raw, drawn, expected, _ = panels(pngs[0], image)
    assert np.array_equal(raw, expected)  # the image as it is, beside its drawn labels
    label_file = image.replace("images", "annotations_detectron2").replace(".jpg", ".png")
    label = np.asarray(Image.open(label_file).resize(raw.shape[1::-1], Image.NEAREST))
    colors = np.array(MetadataCatalog.get("synthetic_ade_sem_seg_train").stuff_colors + [(0, 0, 0)] * 237)
    labelled = label != 255
    assert labelled.mean() > 0.5 and (drawn != raw).any(axis=2)[labelled].mean() > 0.5
    # Each pixel is drawn in its label's colour (alpha 0.6 over the image): the drawing is nearer
    # to the label colours than the image is.
    def distance(panel):
        return np.abs(panel.astype(int) - colors[label])[labelled].mean()
    assert distance(drawn) < 0.7 * distance(raw)


def test_lvis_val_split_instances_of_a_group_and_a_short_table(datasets_root, tmp_path, capsys):
    status, out, err = browse(capsys, "--dataset", "synthetic_lvis_val", "--group", "tail", "--num-images", 2,
                              "--top", 3, "--bottom", 2, "--output-dir", tmp_path)
    assert status == 0, err
    stats = compute_class_stats("synthetic_lvis_val", progress=False, any_split=True)
    rows = histogram_rows(out)
    assert len(rows) == 5 and f"({stats.num_classes - 5} classes not shown" in out
    order = sorted(range(stats.num_classes), key=lambda c: (-stats.counts[c], c))
    assert list(rows) == [stats.class_names[c] for c in order[:3] + order[-2:]]
    for c in order[:3] + order[-2:]:
        assert rows[stats.class_names[c]][1:] == (stats.counts[c], stats.image_counts[c])
    dicts = {os.path.splitext(os.path.basename(d["file_name"]))[0]: d for d in DatasetCatalog.get("synthetic_lvis_val")}
    pngs = sorted(glob.glob(str(tmp_path / "*.png")))
    assert len(pngs) == 2
    tail = set(stats.groups["tail"])
    for png in pngs:
        record = dicts[os.path.splitext(os.path.basename(png))[0]]
        assert tail & {a["category_id"] for a in record["annotations"]}  # --group tail
    record = dicts[os.path.splitext(os.path.basename(pngs[0]))[0]]
    raw, drawn, expected, scale = panels(pngs[0], record["file_name"])
    assert np.array_equal(raw, expected)
    x0, y0, x1, y1 = (int(v * scale) for v in BoxMode.convert(
        record["annotations"][0]["bbox"], record["annotations"][0]["bbox_mode"], BoxMode.XYXY_ABS))
    inside = np.abs(drawn[y0:y1, x0:x1].astype(int) - expected[y0:y1, x0:x1])
    assert inside.mean() > 10  # the instance's mask and box are drawn over it


def test_dataloader_draws_what_the_trainer_loads_with_detectron2s_command_line(datasets_root, tmp_path, capsys):
    status, out, err = browse(capsys, "--source", "dataloader", "--config-file",
                              os.path.join(REPO, "configs/synthetic/mask_rcnn_baseline.yaml"), "--output-dir", tmp_path,
                              "--num-images", 3, "--no-histogram", *TINY_TRAINING, "SOLVER.IMS_PER_BATCH", 2)
    assert status == 0, err
    assert "synthetic_lvis_train" in out and "data loader" in out
    assert len(glob.glob(str(tmp_path / "dataloader_*.png"))) == 3


def test_a_configs_test_split(datasets_root, tmp_path, capsys):
    status, out, err = browse(capsys, "--config-file", os.path.join(REPO, "configs/synthetic/blv_deeplab.yaml"),
                              "--source", "test", "--num-images", 1, "--top", 1, "--bottom", 0, "--workers", 1,
                              "--output-dir", tmp_path)
    assert status == 0, err
    assert out.startswith("synthetic_ade_sem_seg_val: 19 classes, 8 images") and len(histogram_rows(out)) == 1
    assert "training uses the training split's" in out and len(os.listdir(tmp_path)) == 1


def test_a_dataset_registered_by_its_own_code_is_browsed_by_its_metadata(datasets_root, tmp_path, capsys):
    """No dataset name is special: a set registered here (as a register_<family>.py would) works,
    and its missing image is one line naming the file."""
    source = MetadataCatalog.get("synthetic_ade_sem_seg_val")
    dicts = DatasetCatalog.get("synthetic_ade_sem_seg_val")
    missing = [dict(d, file_name=str(tmp_path / "absent.jpg")) for d in dicts[:1]]
    for name, records in (("browse_test_own_val", dicts), ("browse_test_missing_val", missing)):
        DatasetCatalog.register(name, lambda records=records: records)
        MetadataCatalog.get(name).set(stuff_classes=list(source.stuff_classes), ignore_label=255,
                                      evaluator_type="sem_seg")
    try:
        status, out, err = browse(capsys, "--dataset", "browse_test_own_val", "--num-images", 1, "--top", 2,
                                  "--workers", 1, "--output-dir", tmp_path / "own")
        assert status == 0, err
        assert "browse_test_own_val: 19 classes" in out and len(os.listdir(tmp_path / "own")) == 1
        status, out, err = browse(capsys, "--dataset", "browse_test_missing_val", "--no-histogram",
                                  "--output-dir", tmp_path / "missing")
        assert status == 2 and err.count("\n") == 1 and "absent.jpg" in err and err.startswith("error: ")
    finally:
        for name in ("browse_test_own_val", "browse_test_missing_val"):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


@pytest.mark.parametrize("args, says", [
    (["--dataset", "no_such_dataset_train"], "'no_such_dataset_train' is not registered"),
    (["--config-file", os.path.join(REPO, "configs/synthetic/deeplab_v3_plus.yaml"), "MODEL.NO_SUCH_KEY", "1"],
     "MODEL.NO_SUCH_KEY"),
    (["--config-file", "configs/no_such.yaml"], "configs/no_such.yaml"),
    (["--dataset", "synthetic_ade_sem_seg_val", "--dataloader"], "pass --config-file"),
    (["--config-file", os.path.join(REPO, "configs/synthetic/deeplab_v3_plus.yaml"), "--dataloader",
      "--num-images", "-1"], "never ends"),
    (["--dataset", "synthetic_ade_sem_seg_val", "--detectron2-script", "no_such/visualize_data.py"],
     "no_such/visualize_data.py"),
])
def test_bad_input_is_one_line_and_exit_2(datasets_root, capsys, args, says):
    status, out, err = browse(capsys, *args)
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1 and says in err, err


def test_a_missing_annotation_file_is_one_line(datasets_root, tmp_path, capsys):
    from detectron2.data.datasets.lvis import load_lvis_json

    json_file = str(tmp_path / "lvis_v1_train.json")
    DatasetCatalog.register("browse_test_absent_train", lambda: load_lvis_json(json_file, str(tmp_path)))
    MetadataCatalog.get("browse_test_absent_train").set(
        thing_classes=list(MetadataCatalog.get("synthetic_lvis_train").thing_classes), json_file=json_file,
        evaluator_type="lvis")
    try:
        status, out, err = browse(capsys, "--dataset", "browse_test_absent_train", "--output-dir", tmp_path)
    finally:
        DatasetCatalog.remove("browse_test_absent_train")
        MetadataCatalog.remove("browse_test_absent_train")
    assert status == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert f"{json_file} does not exist" in err


def _detectron2_main_source():
    tarballs = sorted(glob.glob(os.path.join(os.path.dirname(REPO), "shared", "vendor", "detectron2-main-*.tar.gz")))
    if not tarballs:
        pytest.skip("no Detectron2 main source archive in ../shared/vendor (test-only reference)")
    return tarballs[0]


def test_detectron2s_own_visualize_data_runs_on_our_config(datasets_root, tmp_path):
    """Detectron2's tools/visualize_data.py (main's, read from the test-only source archive) stops on
    our config keys by itself, and runs unchanged through --detectron2-script."""
    with tarfile.open(_detectron2_main_source()) as tar:
        member = next(m for m in tar if m.name.endswith("/tools/visualize_data.py"))
        script = tmp_path / "visualize_data.py"
        script.write_bytes(tar.extractfile(member).read())
    config = "configs/synthetic/deeplab_v3_plus.yaml"
    alone = run_tool(str(script), "--source", "annotation", "--config-file", config,
                     "--output-dir", tmp_path / "alone", datasets_root=datasets_root, check=False)
    assert alone.returncode != 0 and "Non-existent config key" in alone.stderr
    run_tool("browse_dataset.py", "--detectron2-script", script, "--source", "annotation",
             "--config-file", config, "--output-dir", tmp_path / "d2", datasets_root=datasets_root)
    drawn = sorted(os.listdir(tmp_path / "d2"))
    assert len(drawn) == len(DatasetCatalog.get("synthetic_ade_sem_seg_train")) and drawn[0].endswith(".jpg")
    image = np.asarray(Image.open(tmp_path / "d2" / drawn[0]))
    raw = np.asarray(Image.open(os.path.join(datasets_root, "synthetic", "ADEChallengeData2016", "images",
                                             "training", drawn[0])))
    assert image.shape == raw.shape and np.abs(image.astype(int) - raw).mean() > 5
