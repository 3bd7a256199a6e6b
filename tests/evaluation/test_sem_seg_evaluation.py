"""LongTailSemSegEvaluator: agreement with Detectron2, the mIoU rule, groups, errors, files."""
import longtailseg  # noqa: F401  (registers the LongTailSeg components)

import json
import logging
import math
import os
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

from longtailseg.errors import ConfigError, DatasetError
from longtailseg.evaluation import LongTailSemSegEvaluator, format_class_table, format_group_table
from longtailseg.evaluation.sem_seg_evaluation import ACC_FREQUENCY_PEARSON, accuracy_frequency_correlation

IGNORE = 255


def compat_compiled_ops():
    """True on a Detectron2 with compiled ops (its main branch here), False on make setup's v0.6."""
    import longtailseg._compat as compat

    return compat._detectron2_has_compiled_ops(compat._package_folders("detectron2"))


def register_dataset(labels, folder, class_names):
    """Register a temporary dataset whose i-th image has label map ``labels[i]``.

    Detectron2 v0.6's SemSegEvaluator finds the label file of an input through its dataset
    record (``file_name`` -> ``sem_seg_file_name``), so the images need records, not pixels.
    Returns the dataset name and the model inputs.
    """
    name = f"_test_sem_seg_{uuid.uuid4().hex}"
    records = []
    for i, label in enumerate(labels):
        label_file = os.path.join(folder, f"label_{i}.png")
        Image.fromarray(np.asarray(label, dtype=np.uint8)).save(label_file)
        records.append(
            {
                "file_name": os.path.join(folder, f"image_{i}.jpg"),
                "sem_seg_file_name": label_file,
                "height": label.shape[0],
                "width": label.shape[1],
            }
        )
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(stuff_classes=list(class_names), ignore_label=IGNORE)
    inputs = [{"file_name": r["file_name"]} for r in records]
    return name, inputs


@pytest.fixture
def datasets():
    """Collects registered names and removes them after the test."""
    names = []
    yield names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def one_hot_scores(pred, num_classes):
    """(C, H, W) scores whose argmax is ``pred``."""
    return torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(2, 0, 1).float()


def run(evaluator, inputs, outputs):
    evaluator.reset()
    for inp, out in zip(inputs, outputs):
        evaluator.process([inp], [out])
    return evaluator.evaluate()["sem_seg"]


def random_case(rng, num_classes, shapes):
    """Random labels in which every class occurs, with ~10 % ignored pixels, and random scores."""
    labels = []
    for h, w in shapes:
        label = rng.integers(0, num_classes, size=(h, w))
        label[rng.random((h, w)) < 0.1] = IGNORE
        labels.append(label)
    labels[0].reshape(-1)[:num_classes] = np.arange(num_classes)  # every class present
    outputs = [
        {"sem_seg": torch.from_numpy(rng.standard_normal((num_classes, h, w))).float()}
        for h, w in shapes
    ]
    return labels, outputs


def test_matches_detectron2_when_every_class_is_present(tmp_path, datasets):
    rng = np.random.default_rng(0)
    class_names = [f"class{c}" for c in range(6)]
    labels, outputs = random_case(rng, len(class_names), [(17, 23), (9, 31), (20, 20)])
    name, inputs = register_dataset(labels, str(tmp_path), class_names)
    datasets.append(name)

    groups = {"head": [0, 1], "tail": [2]}
    evaluator = LongTailSemSegEvaluator(name, distributed=False, class_groups=groups)
    ours = run(evaluator, inputs, outputs)
    theirs = run(SemSegEvaluator(name, distributed=False), inputs, outputs)

    for key in ["mIoU", "fwIoU", "mACC", "pACC"] + [
        f"{m}-{c}" for m in ("IoU", "ACC") for c in class_names
    ]:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-9), key
    assert 0 < ours["mIoU"] < 100


# Hand-built case. Classes 0..3; class 3 ("d") never occurs in the ground truth but is predicted
# twice. Per class (TP, FP, FN): a (2, 0, 1), b (1, 0, 1), c (1, 1, 1), d (0, 2, 0) -- the
# prediction of c on the ignored pixel is no false positive.
HAND_GT = np.array([[0, 0, 0, 1], [1, 2, IGNORE, 2]])
HAND_PRED = np.array([[0, 0, 3, 1], [2, 2, 2, 3]])
HAND_GROUPS = {"head": [0, 1], "body": [2], "tail": [3]}


def test_standard_miou_counts_a_predicted_but_absent_class_as_zero(tmp_path, datasets, caplog):
    class_names = ["a", "b", "c", "d"]
    name, inputs = register_dataset([HAND_GT], str(tmp_path), class_names)
    datasets.append(name)
    outputs = [{"sem_seg": one_hot_scores(HAND_PRED, 4)}]

    shares = [0.3, 0.6, 0.08, 0.02]
    with caplog.at_level(logging.INFO, logger="longtailseg.evaluation.sem_seg_evaluation"):
        res = run(
            LongTailSemSegEvaluator(name, distributed=False, class_groups=HAND_GROUPS, train_pixel_shares=shares),
            inputs,
            outputs,
        )
    assert format_group_table(res, HAND_GROUPS) in caplog.text  # the group table is logged
    assert format_class_table(res, class_names, shares, HAND_GROUPS) in caplog.text  # and per class

    iou = {"a": 2 / 3, "b": 1 / 2, "c": 1 / 3, "d": 0.0}
    acc = {"a": 2 / 3, "b": 1 / 2, "c": 1 / 2}
    for c in iou:
        assert res[f"IoU-{c}"] == pytest.approx(100 * iou[c])
    for c in acc:
        assert res[f"ACC-{c}"] == pytest.approx(100 * acc[c])
    assert math.isnan(res["ACC-d"])  # no ground truth: no accuracy
    assert res["mIoU"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 1 / 3 + 0) / 4)  # 37.5
    assert res["mACC"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert res["pACC"] == pytest.approx(100 * 4 / 7)
    assert res["fwIoU"] == pytest.approx(100 * (3 * 2 / 3 + 2 * 1 / 2 + 2 * 1 / 3) / 7)
    assert res["mIoU-head"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert res["mACC-head"] == pytest.approx(100 * (2 / 3 + 1 / 2) / 2)
    assert res["mIoU-body"] == pytest.approx(100 / 3)
    assert res["mACC-body"] == pytest.approx(50.0)
    assert res["mIoU-tail"] == 0.0  # d is predicted twice and never right
    assert math.isnan(res["mACC-tail"])


def test_ground_truth_rule_leaves_absent_classes_out(tmp_path, datasets):
    """TEST.MIOU_RULE "ground_truth": only classes with ground-truth pixels enter mIoU."""
    name, inputs = register_dataset([HAND_GT], str(tmp_path), ["a", "b", "c", "d"])
    datasets.append(name)
    res = run(LongTailSemSegEvaluator(name, distributed=False, class_groups=HAND_GROUPS,
                                      miou_rule="ground_truth"),
              inputs, [{"sem_seg": one_hot_scores(HAND_PRED, 4)}])
    assert math.isnan(res["IoU-d"])
    assert res["mIoU"] == pytest.approx(100 * (2 / 3 + 1 / 2 + 1 / 3) / 3)  # 50, not 37.5
    assert math.isnan(res["mIoU-tail"]) and math.isnan(res["mACC-tail"])
    assert res["mDice"] == pytest.approx(100 * (4 / 5 + 2 / 3 + 2 / 4) / 3)


def test_unknown_miou_rule_is_a_config_error(tmp_path, datasets):
    name, _ = register_dataset([HAND_GT], str(tmp_path), ["a", "b", "c", "d"])
    datasets.append(name)
    with pytest.raises(ConfigError, match="TEST.MIOU_RULE.*standard, ground_truth"):
        LongTailSemSegEvaluator(name, distributed=False, miou_rule="present")


def test_matches_detectron2_when_a_class_is_predicted_but_absent(tmp_path, datasets):
    """Detectron2 v0.6's SemSegEvaluator computes mIoU as the sum of the IoUs of the classes with
    ground truth divided by the number of classes with ground truth or prediction, i.e. a class
    predicted but absent from the ground truth counts as IoU 0: the standard rule. So on such a
    case mIoU, fwIoU, mACC, pACC, every ACC-<class> and the IoU-<class> of every class with
    ground truth agree by definition. They differ only in the per-class IoU of the predicted but
    absent class: v0.6 stores NaN there (though its mean counts it as 0), we store the 0 that
    enters the mean (as mmsegmentation does). Detectron2's current main branch divides by the
    number of classes with ground truth instead: its mIoU is our ``miou_rule="ground_truth"``
    (make test-detectron2-main checks that side)."""
    rng = np.random.default_rng(3)
    class_names = [f"class{c}" for c in range(6)]
    labels, outputs = random_case(rng, len(class_names), [(17, 23), (9, 31)])
    for label in labels:  # class 4 leaves the ground truth but stays in the random predictions
        label[label == 4] = 0
    name, inputs = register_dataset(labels, str(tmp_path), class_names)
    datasets.append(name)

    ours = run(LongTailSemSegEvaluator(name, distributed=False), inputs, outputs)
    ours_gt_rule = run(LongTailSemSegEvaluator(name, distributed=False, miou_rule="ground_truth"),
                       inputs, outputs)
    theirs = run(SemSegEvaluator(name, distributed=False), inputs, outputs)

    assert ours["IoU-class4"] == 0.0 and math.isnan(theirs["IoU-class4"])
    present = [c for c in class_names if c != "class4"]
    for key in ["fwIoU", "mACC", "pACC"] + [f"ACC-{c}" for c in class_names] + [
        f"IoU-{c}" for c in present
    ]:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-9, nan_ok=True), key
    detectron2_v06 = not compat_compiled_ops()
    matching = ours if detectron2_v06 else ours_gt_rule
    assert matching["mIoU"] == pytest.approx(theirs["mIoU"], rel=1e-9)
    assert ours_gt_rule["mIoU"] == pytest.approx(sum(ours[f"IoU-{c}"] for c in present) / 5)
    # Leaving class 4 out instead would raise the mean by a fifth (5 classes instead of 6).
    assert ours["mIoU"] == pytest.approx(sum(ours[f"IoU-{c}"] for c in present) / 6)


def test_format_group_table_rows_and_values():
    res = {
        "mIoU": 50.0,
        "mACC": 55.5556,
        "mIoU-head": 58.3333,
        "mACC-head": 58.3333,
        "mIoU-body": 33.3333,
        "mACC-body": 50.0,
        "mIoU-tail": math.nan,
        "mACC-tail": None,  # as read back from the JSON file
    }
    table = format_group_table(res, HAND_GROUPS, {"head": 0.9, "body": 0.09, "tail": 0.01})
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "group", "classes", "pixel share (train)", "mIoU", "mACC",
    ]
    rows = {line.strip("|").split("|")[0].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in lines[2:]}
    assert list(rows) == ["head", "body", "tail", "all"]
    assert rows["head"] == ["head", "2", "90.00 %", "58.33", "58.33"]
    assert rows["tail"] == ["tail", "1", "1.00 %", "n/a", "n/a"]
    assert rows["all"] == ["all", "4", "100.00 %", "50.00", "55.56"]
    without_shares = format_group_table(res, HAND_GROUPS).splitlines()[2]
    assert without_shares.strip("|").split("|")[2].strip() == "-"


def _table_rows(table):
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]


def test_format_class_table_sorts_classes_by_training_share():
    res = {"IoU-a": 66.6667, "ACC-a": 66.6667, "IoU-b": 50.0, "ACC-b": 50.0,
           "IoU-c": 33.3333, "ACC-c": 50.0, "IoU-d": math.nan, "ACC-d": None}
    table = format_class_table(res, ["a", "b", "c", "d"], [0.3, 0.6, 0.08, 0.02], HAND_GROUPS)
    assert [c.strip() for c in table.splitlines()[0].strip("|").split("|")] == [
        "class", "group", "pixel share (train)", "IoU", "ACC"]
    assert _table_rows(table) == [
        ["b", "head", "60.000 %", "50.00", "50.00"],
        ["a", "head", "30.000 %", "66.67", "66.67"],
        ["c", "body", "8.000 %", "33.33", "50.00"],
        ["d", "tail", "2.000 %", "n/a", "n/a"],
    ]
    # without training shares: the dataset's order, no share, no group
    rows = _table_rows(format_class_table(res, ["a", "b", "c", "d"]))
    assert [r[0] for r in rows] == ["a", "b", "c", "d"] and rows[0][1:3] == ["-", "-"]


def test_label_value_out_of_range_raises_one_line_dataset_error(tmp_path, datasets):
    label = np.zeros((4, 5), dtype=np.int64)
    label[0, :3] = [4, 7, IGNORE]  # 4 classes: 4 and 7 are invalid, 255 is ignore
    name, inputs = register_dataset([label], str(tmp_path), ["a", "b", "c", "d"])
    datasets.append(name)
    evaluator = LongTailSemSegEvaluator(name, distributed=False)
    evaluator.reset()

    with pytest.raises(DatasetError) as excinfo:
        evaluator.process(inputs, [{"sem_seg": torch.zeros(4, 4, 5)}])
    message = str(excinfo.value)
    assert "\n" not in message
    assert os.path.join(str(tmp_path), "label_0.png") in message
    assert "values [4, 7]" in message


def test_results_json_is_written_atomically_and_equals_results(tmp_path, datasets):
    name, inputs = register_dataset([HAND_GT], str(tmp_path), ["a", "b", "c", "d"])
    datasets.append(name)
    out_dir = tmp_path / "eval"
    evaluator = LongTailSemSegEvaluator(
        name, distributed=False, output_dir=str(out_dir), class_groups=HAND_GROUPS,
        group_shares={"head": 0.9, "body": 0.09, "tail": 0.01},
        train_pixel_shares=[0.5, 0.4, 0.09, 0.01],
    )
    res = run(evaluator, inputs, [{"sem_seg": one_hot_scores(HAND_PRED, 4)}])

    # No temporary file left.
    assert sorted(os.listdir(out_dir)) == ["sem_seg_confusion_matrix.npy", "sem_seg_results.json"]
    with open(out_dir / "sem_seg_results.json") as f:
        written = json.load(f)
    assert written["sem_seg"] == {k: None if math.isnan(v) else v for k, v in res.items()}
    assert written["sem_seg"]["mACC-tail"] is None
    assert written["miou_rule"] == "standard"
    assert written["class_groups"] == HAND_GROUPS
    assert written["group_class_counts"] == {"head": 2, "body": 1, "tail": 1}
    assert written["group_present_class_counts"] == {"head": 2, "body": 1, "tail": 0}
    per_class = {entry["name"]: entry for entry in written["per_class"]}
    # c is predicted 3 times, once on the ignored pixel, which does not count.
    assert per_class["c"] == {"id": 2, "name": "c", "group": "body", "IoU": pytest.approx(100 / 3),
                              "ACC": 50.0, "Dice": 50.0, "gt_pixels": 2, "pred_pixels": 2,
                              "train_pixel_share": 0.09}
    assert per_class["d"]["IoU"] == 0.0 and per_class["d"]["ACC"] is None
    assert per_class["d"]["pred_pixels"] == 2 and per_class["d"]["gt_pixels"] == 0
    # Pearson's r over a, b, c (d has no ground truth, so no accuracy).
    acc = [per_class[n]["ACC"] for n in "abc"]
    assert written["sem_seg"][ACC_FREQUENCY_PEARSON] == pytest.approx(
        np.corrcoef(acc, [0.5, 0.4, 0.09])[0, 1], abs=1e-12)

    matrix = np.load(out_dir / written["confusion_matrix_file"])
    assert matrix.shape == (5, 5) and matrix.sum() == HAND_GT.size
    assert matrix[2, 4] == 1  # c predicted on the ignored pixel: [pred, gt], gt = ignore column
    assert matrix[3, 0] == 1 and matrix[3, 2] == 1  # d predicted on an a and on a c pixel
    assert np.trace(matrix[:4, :4]) == 4


def test_train_pixel_shares_of_another_class_count_are_refused(tmp_path, datasets):
    name, _ = register_dataset([HAND_GT], str(tmp_path), ["a", "b", "c", "d"])
    datasets.append(name)
    with pytest.raises(ConfigError, match="3 classes but dataset .* has 4.*CLASS_STATS"):
        LongTailSemSegEvaluator(name, distributed=False, train_pixel_shares=[0.5, 0.3, 0.2])


def test_results_accumulate_over_batches_and_reset(tmp_path, datasets):
    """Images processed one by one give the confusion matrix of all images; reset clears it."""
    rng = np.random.default_rng(1)
    labels, outputs = random_case(rng, 3, [(8, 8), (5, 7)])
    name, inputs = register_dataset(labels, str(tmp_path), ["a", "b", "c"])
    datasets.append(name)
    evaluator = LongTailSemSegEvaluator(name, distributed=False)

    first = run(evaluator, inputs, outputs)
    evaluator.reset()
    evaluator.process(inputs, outputs)  # both images in one batch
    second = evaluator.evaluate()["sem_seg"]
    assert first == second
    assert evaluator._conf_matrix.sum() == sum(label.size for label in labels)


def _distributed_worker(rank, world_size, init_file, name, outputs, result_dir):
    """One rank of the gather test: evaluates every world_size-th image and saves its result.

    Runs in a forked child, so the dataset registered by the parent is already registered.
    """
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        records = DatasetCatalog.get(name)
        evaluator = LongTailSemSegEvaluator(name, distributed=True, class_groups=HAND_GROUPS)
        evaluator.reset()
        for i in range(rank, len(records), world_size):
            evaluator.process([{"file_name": records[i]["file_name"]}], [outputs[i]])
        results = evaluator.evaluate()
        torch.save(results, os.path.join(result_dir, f"rank{rank}.pth"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)  # a rank that dies leaves the other waiting in the gather
def test_distributed_evaluation_gathers_all_ranks_and_only_main_returns(tmp_path, datasets):
    rng = np.random.default_rng(2)
    class_names = ["a", "b", "c", "d"]
    labels, outputs = random_case(rng, len(class_names), [(6, 7), (5, 5), (8, 3)])
    name, inputs = register_dataset(labels, str(tmp_path), class_names)
    datasets.append(name)
    single = run(
        LongTailSemSegEvaluator(name, distributed=False, class_groups=HAND_GROUPS), inputs, outputs
    )

    # fork, not spawn: the children then need not import torch and Detectron2 again (~10 s).
    torch.multiprocessing.start_processes(
        _distributed_worker,
        args=(2, str(tmp_path / "rendezvous"), name, outputs, str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    main = torch.load(tmp_path / "rank0.pth", weights_only=False)
    assert torch.load(tmp_path / "rank1.pth", weights_only=False) is None
    assert main["sem_seg"].keys() == single.keys()
    for key, value in single.items():
        assert main["sem_seg"][key] == pytest.approx(value, nan_ok=True), key


def test_dice_error_on_the_hand_built_case(tmp_path, datasets):
    name, inputs = register_dataset([HAND_GT], str(tmp_path), ["a", "b", "c", "d"])
    datasets.append(name)
    res = run(LongTailSemSegEvaluator(name, distributed=False), inputs,
              [{"sem_seg": one_hot_scores(HAND_PRED, 4)}])
    # Dice 2TP / (2TP + FP + FN): a 4/5, b 2/3, c 2/4, d 0 (predicted, no ground truth).
    expected = (4 / 5 + 2 / 3 + 2 / 4 + 0) / 4
    assert res["mDice"] == pytest.approx(100 * expected)
    assert res["DiceErr"] == pytest.approx(1 - expected)


def test_uniform_confusion_matrix_gives_every_present_class_the_rarest_count():
    from longtailseg.evaluation.sem_seg_evaluation import uniform_confusion_matrix

    rng = np.random.default_rng(0)
    conf = rng.integers(0, 50, size=(5, 5))
    conf[:, 0] *= 40  # a frequent class
    conf[:, 2] = 0  # a class absent from the ground truth
    conf[4, :] = 0  # (no prediction row for ignored pixels in this toy)
    gt = conf[:, :4].sum(axis=0)
    rarest = gt[gt > 0].min()
    uniform = uniform_confusion_matrix(conf, seed=3)
    assert uniform[:, :4].sum(axis=0).tolist() == [rarest if g else 0 for g in gt]
    assert (uniform <= conf).all()  # a sub-sample, never more than there is
    assert (uniform[:, 4] == 0).all()  # ignored pixels are never sampled
    assert np.array_equal(uniform, uniform_confusion_matrix(conf, seed=3))  # fixed seed
    assert not np.array_equal(uniform, uniform_confusion_matrix(conf, seed=4))


def test_uniform_sub_sample_keeps_each_class_confusion_in_expectation():
    from longtailseg.evaluation.sem_seg_evaluation import uniform_confusion_matrix

    conf = np.zeros((3, 3), dtype=np.int64)
    conf[:, 0] = [900_000, 100_000, 0]  # class 0: 90 % right
    conf[:, 1] = [5_000, 5_000, 0]  # class 1: 50 % right, the rarest
    uniform = uniform_confusion_matrix(conf, seed=0)
    assert uniform[:, 0].sum() == uniform[:, 1].sum() == 10_000
    assert uniform[0, 0] / 10_000 == pytest.approx(0.9, abs=0.01)


def test_evaluator_reports_uniform_setting_beside_normal_numbers(tmp_path, datasets):
    name, inputs = register_dataset([HAND_GT], str(tmp_path), ["a", "b", "c", "d"])
    datasets.append(name)
    outputs = [{"sem_seg": one_hot_scores(HAND_PRED, 4)}]
    plain = run(LongTailSemSegEvaluator(name, distributed=False, class_groups=HAND_GROUPS), inputs, outputs)
    res = run(LongTailSemSegEvaluator(name, distributed=False, class_groups=HAND_GROUPS, uniform_seed=0),
              inputs, outputs)
    normal = {k: v for k, v in res.items() if not k.endswith("-uniform")}
    assert normal.keys() == plain.keys()
    assert all(normal[k] == plain[k] or (math.isnan(normal[k]) and math.isnan(plain[k])) for k in plain)
    # b and c have 2 pixels each, a is sub-sampled from 3 to 2; b and c are kept whole.
    assert res["ACC-b"] == pytest.approx(50.0) and "mACC-body-uniform" in res
    assert res["mACC-body-uniform"] == pytest.approx(plain["mACC-body"])  # c kept whole
    assert "IoU-a-uniform" not in res


def test_accuracy_frequency_pearson_by_hand():
    acc = [90.0, 80.0, 50.0, 20.0, None]  # the last class has no ground truth: left out
    shares = [0.6, 0.3, 0.05, 0.05, 0.0]
    x, y = np.array(acc[:4]), np.array(shares[:4])
    dx, dy = x - x.mean(), y - y.mean()  # x mean 60, y mean 0.25
    by_hand = (dx * dy).sum() / math.sqrt((dx ** 2).sum() * (dy ** 2).sum())
    r = accuracy_frequency_correlation(acc, shares)
    assert r == pytest.approx(by_hand, abs=1e-12) and r == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert 0.86 < r < 0.87  # 21.5 / sqrt(3000 * 0.205)
    assert accuracy_frequency_correlation([50.0, 60.0, float("nan")], [0.5, 0.3, 0.2]) == pytest.approx(-1.0)
    assert math.isnan(accuracy_frequency_correlation([50.0, None], [0.5, 0.5]))
    assert math.isnan(accuracy_frequency_correlation([50.0, 50.0, 50.0], [0.5, 0.3, 0.2]))
