"""Detectron2 main's config keys on Detectron2 v0.6: a config dumped with main's defaults (read
from its vendored source) loads on this Detectron2 and the other way; LongTailSeg adds main's
keys only when absent; REPEAT_SQRT changes the repeat factors on v0.6 as on main; main-only keys
that v0.6 would ignore are refused unless at their default."""
import math

import pytest

import detectron2_main_source
from longtailseg.config import add_longtailseg_config, check_detectron2_main_keys
from longtailseg.data.build import repeat_factors_from_category_frequency
from longtailseg.errors import ConfigError

from detectron2.config import CfgNode, get_cfg

RECIPE = {"MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": True, "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": True,
          "MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER": 0.25, "MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES": 30,
          "DATALOADER.REPEAT_SQRT": False, "DATALOADER.REPEAT_THRESHOLD": 0.001,
          "TEST.DETECTIONS_PER_IMAGE": 300}


def _main_cfg():
    """Detectron2 main's default config, from its source (its defaults.py only builds CfgNodes)."""
    source = detectron2_main_source.source("detectron2/config/defaults.py")
    scope = {"CN": CfgNode}
    exec(compile(source.replace("from .config import CfgNode as CN", ""), "detectron2-main/defaults.py", "exec"), scope)
    return scope["_C"].clone()


def _v06_cfg():
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    return cfg


def _set(cfg, values):
    cfg.merge_from_list([str(x) for kv in values.items() for x in kv])
    return cfg


def _get(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_longtailseg_adds_mains_keys_only_when_absent():
    main = _main_cfg()
    main.DATALOADER.REPEAT_SQRT = False
    main.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES = 7
    add_longtailseg_config(main)
    assert main.DATALOADER.REPEAT_SQRT is False and main.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES == 7
    v06 = _v06_cfg()
    assert {k: _get(v06, k) for k in RECIPE} == {k: _get(_main_cfg(), k) for k in RECIPE}  # same defaults


def test_a_config_dumped_on_main_loads_here_and_the_other_way(tmp_path):
    main = _main_cfg()
    add_longtailseg_config(main)
    _set(main, RECIPE)
    (tmp_path / "main.yaml").write_text(main.dump())
    here = _v06_cfg()
    here.merge_from_file(str(tmp_path / "main.yaml"))  # every key of main's full dump exists here
    assert {k: _get(here, k) for k in RECIPE} == RECIPE
    (tmp_path / "here.yaml").write_text(here.dump())
    back = _main_cfg()
    add_longtailseg_config(back)
    back.merge_from_file(str(tmp_path / "here.yaml"))
    assert {k: _get(back, k) for k in RECIPE} == RECIPE
    check_detectron2_main_keys(here)  # main's defaults everywhere else


def test_a_main_only_key_this_detectron2_would_ignore_is_refused():
    if hasattr(get_cfg().SOLVER, "NUM_DECAYS"):
        pytest.skip("this Detectron2 reads SOLVER.NUM_DECAYS")
    cfg = _set(_v06_cfg(), {"SOLVER.NUM_DECAYS": 5})
    with pytest.raises(ConfigError, match=r"^SOLVER.NUM_DECAYS is 5, a key of Detectron2's main branch"):
        check_detectron2_main_keys(cfg)


def test_repeat_sqrt_gives_mains_repeat_factors():
    """LVIS appendix B.2: r(c) = max(1, (t / f_c)^(1/2 or 1)), an image's factor the max over its
    categories; f_c the share of images holding c."""
    images = [[0], [0, 1], [0, 2], [0], [0], [0], [0], [0], [0], [0, 1]]  # f: 1, 0.2, 0.1
    dicts = [{"annotations": [{"category_id": c} for c in cats]} for cats in images]
    frequency = {0: 1.0, 1: 0.2, 2: 0.1}
    for sqrt in (True, False):
        factors = repeat_factors_from_category_frequency(dicts, 0.4, sqrt=sqrt)
        category = {c: max(1.0, (0.4 / f) ** (0.5 if sqrt else 1.0)) for c, f in frequency.items()}
        expected = [max(category[c] for c in cats) for cats in images]
        assert factors.tolist() == pytest.approx(expected, rel=1e-6)
    assert math.isclose(float(repeat_factors_from_category_frequency(dicts, 0.4, sqrt=False)[2]), 4.0, rel_tol=1e-6)
