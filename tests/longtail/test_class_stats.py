import json

import numpy as np
import pytest

from longtailseg.errors import ClassStatsError
from longtailseg.longtail import class_stats as cs


def _stats(counts, names=None):
    names = names or [f"c{i}" for i in range(len(counts))]
    freqs = np.asarray(counts) / sum(counts)
    return cs.ClassStats("toy_train", "sem_seg", names, counts, [1] * len(counts),
                         cs.split_by_ratio(freqs), "ratio", 3)


def test_split_by_ratio_thresholds():
    """Head strictly above 1 %, tail at or below 0.1 % (DisAlign's ADE20K boundaries)."""
    groups = cs.split_by_ratio([0.5, 0.011, 0.01, 0.0011, 0.001, 0.0009, 0.0])
    assert groups == {"head": [0, 1], "body": [2, 3], "tail": [4, 5, 6]}


# objectInfo150 rows around DisAlign's two boundaries (values as published): "chair" is the 20th
# and last head class, "car" (0.0098) the first body class, "computer" (0.0011) the last body
# class and "swivel chair" (0.0010) the first tail class.
OBJECT_INFO_BOUNDARIES = """Idx\tRatio\tTrain\tVal\tName
20\t0.0103\t3261\t318\tchair
21\t0.0098\t3164\t306\tcar, auto, automobile, machine, motorcar
75\t0.0011\t265\t29\tcomputer, computing machine
76\t0.0010\t324\t33\tswivel chair
77\t0.0009\t304\t27\tboat
"""


def test_object_info_boundary_classes_fall_in_disalign_groups(tmp_path):
    path = tmp_path / "objectInfo150.txt"
    path.write_text(OBJECT_INFO_BOUNDARIES)
    info = cs.parse_ade20k_object_info(str(path))
    assert cs.split_by_ratio(info["ratios"]) == {"head": [0], "body": [1, 2], "tail": [3, 4]}


def test_published_object_info_gives_disalign_groups_exactly(ade20k_object_info):
    """The full published table: [:20], [20:75], [75:] (20 / 55 / 75 classes). Renormalising
    the ratios by their sum (0.9275) would move "car" into head: 21 / 55 / 74."""
    info = cs.parse_ade20k_object_info(ade20k_object_info)
    assert len(info["ratios"]) == 150 and sum(info["ratios"]) == pytest.approx(0.9275)
    groups = cs.split_by_ratio(info["ratios"])
    assert groups == {"head": list(range(20)), "body": list(range(20, 75)), "tail": list(range(75, 150))}
    renormalised = cs.split_by_ratio(np.asarray(info["ratios"]) / sum(info["ratios"]))
    assert [len(ids) for ids in renormalised.values()] == [21, 55, 74]


def test_split_by_ratio_rejects_inverted_thresholds():
    with pytest.raises(ClassStatsError, match="HEAD_RATIO"):
        cs.split_by_ratio([0.5], head_ratio=0.001, tail_ratio=0.01)


def test_lvis_frequency_groups():
    assert cs.split_by_lvis_frequency(["f", "r", "c", "f"]) == {"head": [0, 3], "body": [2], "tail": [1]}
    with pytest.raises(ClassStatsError):
        cs.split_by_lvis_frequency(["x"])


def test_save_load_roundtrip_is_atomic(tmp_path):
    stats = _stats([900, 90, 9, 1])
    path = tmp_path / "sub" / "stats.json"
    cs.save(stats, str(path))
    assert [p.name for p in path.parent.iterdir()] == ["stats.json"]  # no temp file left
    loaded = cs.load(str(path))
    assert loaded.counts == [900, 90, 9, 1] and loaded.groups == stats.groups
    np.testing.assert_allclose(loaded.frequencies, [0.9, 0.09, 0.009, 0.001])
    data = json.loads(path.read_text())
    assert data["group_shares"]["head"] == pytest.approx(0.99)


def test_mismatched_stats_are_refused_with_the_file_and_the_fix(tmp_path):
    stats = _stats([5, 3, 2])
    with pytest.raises(ClassStatsError) as e:
        cs.check_matches(stats, ["c0", "c1"], "toy_train", "/x/stats.json")
    message = str(e.value)
    assert "/x/stats.json" in message and "3 classes" in message and "compute_class_stats.py" in message
    assert "\n" not in message
    with pytest.raises(ClassStatsError, match="names class 1 'c1'"):
        cs.check_matches(stats, ["c0", "other", "c2"], "toy_train")
    cs.check_matches(stats, ["c0", "c1", "c2"], "toy_train")  # matching: no error


def test_load_refuses_a_foreign_json(tmp_path):
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps({"counts": [1, 2]}))
    with pytest.raises(ClassStatsError, match="not a longtailseg-class-stats/1 file"):
        cs.load(str(path))
    with pytest.raises(ClassStatsError, match="does not exist"):
        cs.load(str(tmp_path / "missing.json"))


def test_ade20k_object_info_parser(tmp_path):
    path = tmp_path / "objectInfo150.txt"
    path.write_text("Idx\tRatio\tTrain\tVal\tName\n1\t0.1576\t11664\t1172\twall\n2\t0.1072\t6046\t612\tbuilding, edifice\n")
    info = cs.parse_ade20k_object_info(str(path))
    assert info["ratios"] == [0.1576, 0.1072] and info["names"] == ["wall", "building, edifice"]


@pytest.mark.parametrize("num_classes", [3, 19, 150, 1203])
def test_synthetic_long_tail_profile_has_every_group_and_round_trips(num_classes, tmp_path):
    stats = cs.synthetic_long_tail(num_classes, task="instances" if num_classes == 1203 else "sem_seg")
    assert stats.num_classes == num_classes
    assert all(a >= b for a, b in zip(stats.counts, stats.counts[1:])) and stats.counts[-1] >= 1
    assert all(stats.groups[g] for g in ("head", "body", "tail"))
    assert sorted(sum(stats.groups.values(), [])) == list(range(num_classes))
    cs.save(stats, str(tmp_path / "s.json"))
    assert cs.load(str(tmp_path / "s.json")).counts == stats.counts
