"""MEDOE's class groups per dataset: an expert owning fewer than two classes is refused, naming the
thresholds; Cityscapes' thresholds give every expert two classes or more (issue 22)."""
import numpy as np
import pytest

from conftest import REPO, TINY_TRAINING, run_tool, tiny_cfg

from longtailseg.data.synthetic.profiles import CITYSCAPES_PIXEL_PERCENT
from longtailseg.engine import load_config
from longtailseg.errors import ConfigError
from longtailseg.longtail import class_stats as cs
from longtailseg.longtail.experts import expert_class_masks
from longtailseg.modeling.sem_seg.medoe import check_experts_own_two_classes

EXPERT_GROUPS = [["head", "body", "tail"], ["body", "tail"], ["tail"]]


def cityscapes_stats(head_ratio, tail_ratio):
    """Cityscapes-like statistics whose shares are of the labelled pixels (the total holds no
    ignored pixel), which is how the 9 / 9 / 1 split of the issue was measured."""
    names = [name for name, _ in CITYSCAPES_PIXEL_PERCENT]
    counts = [int(round(percent * 1e6)) for _, percent in CITYSCAPES_PIXEL_PERCENT]
    shares = np.asarray(counts) / sum(counts)
    return cs.ClassStats(dataset="cityscapes_fine_sem_seg_train", task="sem_seg", class_names=names,
                         counts=counts, image_counts=[1] * 19,
                         groups=cs.split_by_ratio(shares, head_ratio, tail_ratio),
                         group_rule=f"share of all training pixels: head > {head_ratio:g}, tail <= {tail_ratio:g}",
                         num_images=2975, extra={"all_pixels": sum(counts)})


def cfg_with(head_ratio, tail_ratio):
    cfg = load_config(f"{REPO}/configs/cityscapes/medoe_deeplab.yaml", freeze=False)
    cfg.MODEL.LONG_TAIL.HEAD_RATIO, cfg.MODEL.LONG_TAIL.TAIL_RATIO = head_ratio, tail_ratio
    cfg.MODEL.LONG_TAIL.CLASS_STATS = "output/class_stats.json"
    return cfg


def test_default_thresholds_on_cityscapes_leave_one_tail_class_and_are_refused():
    stats = cityscapes_stats(0.01, 0.001)
    sizes = [len(stats.groups[g]) for g in cs.GROUP_NAMES]
    shares = [100 * stats.group_share(g) for g in cs.GROUP_NAMES]
    assert sizes == [9, 9, 1] and np.allclose(shares, [96.3, 3.6, 0.10], atol=0.1)
    masks = expert_class_masks(stats.groups, EXPERT_GROUPS, 19)
    with pytest.raises(ConfigError) as refused:
        check_experts_own_two_classes(masks, EXPERT_GROUPS, stats, cfg_with(0.01, 0.001))
    message = str(refused.value)
    assert "\n" not in message
    for text in ("expert 3 (tail) owns 1 class (motorcycle)", "9 / 9 / 1", "MODEL.LONG_TAIL.HEAD_RATIO",
                 "TAIL_RATIO (0.001)"):
        assert text in message, message


def test_cityscapes_configs_give_every_expert_two_classes_or_more():
    cfg = load_config(f"{REPO}/configs/cityscapes/medoe_deeplab.yaml")
    head_ratio, tail_ratio = cfg.MODEL.LONG_TAIL.HEAD_RATIO, cfg.MODEL.LONG_TAIL.TAIL_RATIO
    # The same groups whether the shares are of the labelled pixels or of all pixels.
    labelled = cityscapes_stats(head_ratio, tail_ratio)
    all_pixels = cs.split_by_ratio([p / 100 for _, p in CITYSCAPES_PIXEL_PERCENT], head_ratio, tail_ratio)
    assert labelled.groups == all_pixels
    names = labelled.class_names
    assert [names[c] for c in labelled.groups["tail"]] == [
        "traffic light", "rider", "truck", "bus", "train", "motorcycle"]
    assert [names[c] for c in labelled.groups["head"]] == [
        "road", "sidewalk", "building", "vegetation", "sky", "car"]
    masks = expert_class_masks(labelled.groups, EXPERT_GROUPS, 19)
    check_experts_own_two_classes(masks, EXPERT_GROUPS, labelled, cfg)
    assert masks.sum(dim=1).tolist() == [19, 13, 6]
    # Every Cityscapes config shares these groups (evaluation compares methods by them).
    for name in ("deeplab_v3_plus_R_50", "blv_deeplab", "disalign_deeplab", "pat_deeplab", "medoe_deeplab_moe"):
        other = load_config(f"{REPO}/configs/cityscapes/{name}.yaml").MODEL.LONG_TAIL
        assert (other.HEAD_RATIO, other.TAIL_RATIO) == (head_ratio, tail_ratio), name


def test_statistics_are_regrouped_at_the_configs_thresholds_without_counting_again():
    stats = cityscapes_stats(0.01, 0.001)
    assert cs.regrouped(stats, 0.01, 0.001) is None
    regrouped = cs.regrouped(stats, 0.02, 0.003)
    assert [len(regrouped.groups[g]) for g in cs.GROUP_NAMES] == [6, 7, 6]
    assert regrouped.counts == stats.counts and "head > 0.02, tail <= 0.003" in regrouped.group_rule
    # Without the total the shares were taken of, a file keeps its groups.
    stats.extra = {}
    assert cs.regrouped(stats, 0.02, 0.003) is None


def test_one_class_expert_is_refused_in_one_line_under_two_processes(datasets_root, tmp_path):
    # The tiny set's rarest class alone in the tail: a threshold between its share and the next.
    counted = cs.load(tiny_cfg("synthetic/medoe_deeplab.yaml", tmp_path / "count").MODEL.LONG_TAIL.CLASS_STATS)
    shares = np.sort(cs.pixel_shares(counted))
    tail_ratio = float((shares[0] + shares[1]) / 2)
    out = tmp_path / "out"
    proc = run_tool("train_net.py", "--config-file", "configs/synthetic/medoe_deeplab.yaml", "--num-gpus", 2,
                    "--dist-url", "auto", *TINY_TRAINING, "SOLVER.MAX_ITER", 2, "OUTPUT_DIR", out,
                    "MODEL.LONG_TAIL.TAIL_RATIO", tail_ratio, datasets_root=datasets_root, check=False)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "expert 3 (tail) owns 1 class" in last and "MODEL.LONG_TAIL.HEAD_RATIO" in last, last
    assert not list(out.glob("model_*.pth"))
    assert shares[0] <= tail_ratio < shares[1]


def test_cached_statistics_are_regrouped_when_the_thresholds_change(datasets_root, tmp_path, caplog):
    counted = cs.load(tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path).MODEL.LONG_TAIL.CLASS_STATS)
    shares = np.sort(cs.pixel_shares(counted))
    tail_ratio = float((shares[2] + shares[3]) / 2)  # the three rarest classes in the tail
    caplog.clear()  # the first count's records, when the logger's level already lets INFO through
    with caplog.at_level("INFO", logger="longtailseg"):
        path = tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path, "MODEL.LONG_TAIL.TAIL_RATIO",
                        tail_ratio).MODEL.LONG_TAIL.CLASS_STATS
    regrouped = cs.load(path)
    assert len(regrouped.groups["tail"]) == 3 and regrouped.counts == counted.counts
    assert "regrouped at head > 0.01" in caplog.text and "counting classes" not in caplog.text
