"""docs/CONFIG_REFERENCE.md is what tools/make_config_reference.py writes from the config defaults,
and it lists every key add_longtailseg_config adds."""
import os
import sys

from detectron2.config import get_cfg

from longtailseg import add_longtailseg_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import make_config_reference  # noqa: E402  (a tool, not a package module)


def _keys(node, prefix=""):
    for name, value in node.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            yield from _keys(value, key + ".")
        else:
            yield key


def test_reference_is_current():
    assert make_config_reference.main(["--check"]) == 0, (
        "docs/CONFIG_REFERENCE.md is out of date: run `python tools/make_config_reference.py`")


def test_every_added_key_is_in_the_reference_with_its_default():
    plain = get_cfg()
    from detectron2.projects.deeplab import add_deeplab_config
    add_deeplab_config(plain)
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    added = set(_keys(cfg)) - set(_keys(plain))
    entries = {key: default for key, default, _ in make_config_reference.config_entries() if default}
    assert added and added <= set(entries), sorted(added - set(entries))
    for key in added:  # the default the reference shows is the value the config holds
        node = cfg
        for part in key.split("."):
            node = node[part]
        assert eval(entries[key]) == node, key  # the defaults are Python literals


def test_a_new_key_without_reference_is_caught(tmp_path, monkeypatch):
    defaults = tmp_path / "defaults.py"
    source = open(make_config_reference.DEFAULTS).read()
    defaults.write_text(source.replace(
        "    cfg.MODEL.LONG_TAIL.HEAD_RATIO = 0.01",
        "    # A key added without regenerating the reference.\n    cfg.MODEL.LONG_TAIL.NEW_KEY = 3\n"
        "    cfg.MODEL.LONG_TAIL.HEAD_RATIO = 0.01"))
    monkeypatch.setattr(make_config_reference, "DEFAULTS", str(defaults))
    assert make_config_reference.main(["--check"]) == 1
