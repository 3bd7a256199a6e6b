"""No code from a file runs (issue 26): weights (.pkl and .pth), configs and results are read as
data only, a file that would run code is refused in one line naming it, and Detectron2's zoo .pkl
files and _BASE_ configs load as before."""
import glob
import json
import os
import pickle

import numpy as np
import pytest
import torch

from conftest import REPO, TINY_TRAINING, run_tool, tiny_cfg
from longtailseg import add_longtailseg_config, model_zoo
from longtailseg.engine.checkpoint import CheckpointError, LongTailCheckpointer, check_complete_load
from longtailseg.errors import ConfigError, UnreadableFileError, UntrustedFileError
from longtailseg.safe_files import load_json, load_pickle, load_torch, load_yaml, merge_config_file

from detectron2.config import get_cfg
from detectron2.modeling import build_model

CONFIG = "configs/synthetic/deeplab_v3_plus.yaml"
ALL_CONFIGS = sorted(os.path.relpath(p, REPO) for p in
                     glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


class _Payload:
    """Unpickling this runs ``os.system("touch MARKER")``, as a hostile checkpoint would."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _hostile_pkl(path, marker, protocol=2):
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": _Payload(marker)}, "__author__": "x"}, f, protocol=protocol)
    return path


def _one_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def _cfg():
    cfg = get_cfg()
    add_longtailseg_config(cfg)
    return cfg


@pytest.fixture
def model(datasets_root, tmp_path):
    return build_model(tiny_cfg("synthetic/deeplab_v3_plus.yaml", tmp_path / "out", "MODEL.DEVICE", "cpu"))


# ------------------------------------------------------------------------------------- weights

@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_pickle_payload_is_refused(tmp_path, protocol):
    marker = tmp_path / "MARKER"
    bad = _hostile_pkl(tmp_path / "bad.pkl", marker, protocol)
    with pytest.raises(UntrustedFileError) as e:
        load_pickle(str(bad))
    message = _one_line(str(e.value))
    assert str(bad) in message and "posix.system" in message and not marker.exists()


def test_python2_names_are_mapped_before_the_check(tmp_path):
    """A Python 2 pickle names builtins ``__builtin__``: its set is admitted, its eval is not."""
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({1, 2}, protocol=0))
    assert b"__builtin__" in ok.read_bytes()
    assert load_pickle(str(ok)) == {1, 2}
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"c__builtin__\neval\n(S'1+1'\ntR.")
    with pytest.raises(UntrustedFileError, match="builtins.eval"):
        load_pickle(str(bad))


def test_checkpointer_refuses_a_pickle_payload(model, tmp_path):
    marker = tmp_path / "MARKER"
    bad = _hostile_pkl(tmp_path / "bad.pkl", marker)
    with pytest.raises(UntrustedFileError) as e:
        LongTailCheckpointer(model).load(str(bad))
    assert str(bad) in _one_line(str(e.value)) and not marker.exists()


def test_resume_refuses_a_pickle_payload_named_by_last_checkpoint(model, tmp_path):
    marker = tmp_path / "MARKER"
    _hostile_pkl(tmp_path / "model_0000009.pkl", marker)
    (tmp_path / "last_checkpoint").write_text("model_0000009.pkl")
    with pytest.raises(UntrustedFileError, match="model_0000009.pkl"):
        LongTailCheckpointer(model, save_dir=str(tmp_path)).resume_or_load("", resume=True)
    assert not marker.exists()


def test_checkpointer_refuses_a_pth_payload(model, tmp_path):
    marker = tmp_path / "MARKER"
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"w": _Payload(marker)}}, bad)
    for load in (lambda: load_torch(str(bad)), lambda: LongTailCheckpointer(model).load(str(bad))):
        with pytest.raises(UntrustedFileError) as e:
            load()
        assert str(bad) in _one_line(str(e.value)) and "posix.system" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("content", ["garbage", "plain_pickle", "truncated"])
def test_a_pth_that_is_not_a_checkpoint_is_unreadable_not_untrusted(tmp_path, content):
    path = tmp_path / "model.pth"
    if content == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif content == "plain_pickle":
        path.write_bytes(pickle.dumps({"model": {"w": np.ones(3)}}, protocol=4))
    else:
        torch.save({"model": {"w": torch.ones(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(UnreadableFileError) as e:
        load_torch(str(path))
    message = _one_line(str(e.value))
    assert str(path) in message and "weights_only=False" not in message


def test_a_tensor_pickled_with_plain_pickle_loads_and_its_storage_is_checked(tmp_path):
    path = tmp_path / "tensors.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": torch.arange(4.0)}, "__author__": "us"}, f, protocol=2)
    assert torch.equal(load_pickle(str(path))["model"]["w"], torch.arange(4.0))


@pytest.mark.parametrize("protocol", [2, 4])
def test_detectron2_zoo_pkl_loads_into_the_model(model, tmp_path, protocol):
    """A Detectron2 model zoo .pkl: {"model": {name: np.ndarray}, "__author__", "matching_heuristics"},
    pickled as Detectron2's converters write it (protocol 2), and with protocol 4."""
    g = torch.Generator().manual_seed(protocol)
    expected = {k: (torch.rand(v.shape, generator=g) * 10).to(v.dtype) if v.is_floating_point() else v
                for k, v in model.state_dict().items()}
    path = tmp_path / "model_final_zoo.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in expected.items()},
                     "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}, f, protocol=protocol)
    checkpointer = LongTailCheckpointer(model)
    checkpointer.load(str(path))
    check_complete_load(checkpointer, str(path))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_own_pth_checkpoint_round_trips_with_weights_only(model, tmp_path):
    """What training saves (model, RNG states, numbers) is read back with weights_only=True."""
    checkpointer = LongTailCheckpointer(model, save_dir=str(tmp_path))
    checkpointer.save("model_0000001", iteration=1, extra={"numpy": np.arange(3)})
    data = load_torch(str(tmp_path / "model_0000001.pth"))
    assert data["iteration"] == 1 and list(data["extra"]["numpy"]) == [0, 1, 2]
    assert set(data["model"]) == set(model.state_dict())


def test_truncated_pkl_is_one_line_checkpoint_error(model, tmp_path):
    good = tmp_path / "good.pkl"
    with open(good, "wb") as f:
        pickle.dump({"model": {"w": np.ones(1000)}, "__author__": "x"}, f, protocol=2)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError) as e:
        LongTailCheckpointer(model).load(str(truncated))
    assert str(truncated) in _one_line(str(e.value))


def test_eval_only_refuses_a_pickle_payload_end_to_end(datasets_root, tmp_path):
    marker = tmp_path / "MARKER"
    bad = _hostile_pkl(tmp_path / "bad.pkl", marker)
    proc = run_tool("train_net.py", "--config-file", CONFIG, "--eval-only", *TINY_TRAINING,
                    "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", bad, "OUTPUT_DIR", tmp_path / "out",
                    datasets_root=datasets_root, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not marker.exists()


# -------------------------------------------------------------------------------------- configs

def test_python_yaml_tag_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "MARKER"
    config = tmp_path / "bad.yaml"
    config.write_text(f'_BASE_: "{REPO}/{CONFIG}"\nSOLVER:\n  BASE_LR: !!python/object/apply:os.system '
                      f'["touch {marker}"]\n')
    with pytest.raises(UntrustedFileError) as e:
        merge_config_file(_cfg(), str(config))
    message = _one_line(str(e.value))
    assert str(config) in message and "line 3" in message and "Python tags are not accepted" in message
    assert not marker.exists()


def test_python_yaml_tag_in_a_base_names_the_base(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "base.yaml").write_text(f'SEED: !!python/object/apply:os.system ["touch {marker}"]\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text('_BASE_: "../base.yaml"\nSEED: 3\n')
    with pytest.raises(UntrustedFileError, match="base.yaml line 1"):
        merge_config_file(_cfg(), str(tmp_path / "sub" / "child.yaml"))
    assert not marker.exists()


@pytest.mark.parametrize("config", ALL_CONFIGS)
def test_shipped_configs_merge_as_detectron2_merges_them(config):
    expected, cfg = _cfg(), _cfg()
    expected.merge_from_file(os.path.join(REPO, config))
    merge_config_file(cfg, os.path.join(REPO, config))
    assert cfg == expected and cfg.dump() == expected.dump()


def test_base_inheritance_relative_to_the_including_file(tmp_path):
    """Nested _BASE_ (relative to each including file), a list of bases (later ones win), and the
    file over its bases: the same result as Detectron2's merge_from_file."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "root.yaml").write_text(f'_BASE_: "{REPO}/configs/Base-DeepLabV3Plus.yaml"\n'
                                        "SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 7\nSEED: 1\n")
    (tmp_path / "a" / "mid.yaml").write_text('_BASE_: "../root.yaml"\nSOLVER:\n  MAX_ITER: 9\n')
    (tmp_path / "a" / "other.yaml").write_text("SEED: 2\nSOLVER:\n  BASE_LR: 0.25\n")
    (tmp_path / "a" / "b" / "leaf.yaml").write_text(
        '_BASE_: ["../mid.yaml", "../other.yaml"]\nOUTPUT_DIR: leaf\n')
    expected, cfg = _cfg(), _cfg()
    expected.merge_from_file(str(tmp_path / "a" / "b" / "leaf.yaml"))
    merge_config_file(cfg, str(tmp_path / "a" / "b" / "leaf.yaml"))
    assert cfg == expected
    assert (cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SEED, cfg.OUTPUT_DIR) == (0.25, 9, 2, "leaf")


@pytest.mark.parametrize("text, expected", [
    ("SOLVER:\n  BASE_LR: [0.1\n", "line 3 is not valid YAML"),
    ("SOLVER:\n  BASE_LRR: 0.1\n", "SOLVER.BASE_LRR"),
    ("SOLVER:\n  BASE_LR: one\n", "SOLVER.BASE_LR"),
    ('_BASE_: "loop.yaml"\n', "includes itself"),
    ("- a list\n", "not a mapping"),
    ('_BASE_: "../cfg/loop.yaml"\n', "includes itself"),
])
def test_bad_config_is_one_line_config_error(tmp_path, text, expected):
    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "loop.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as e:
        merge_config_file(_cfg(), str(config))
    message = _one_line(str(e.value))
    assert str(config) in message and expected in message


def test_model_zoo_get_config_reads_with_the_safe_loader(monkeypatch):
    seen = []
    monkeypatch.setattr("longtailseg.safe_files.load_yaml",
                        lambda path, real=load_yaml: seen.append(path) or real(path))
    cfg = model_zoo.get_config("synthetic/deeplab_v3_plus.yaml")
    expected = _cfg()
    expected.merge_from_file(os.path.join(REPO, CONFIG))
    assert cfg == expected and seen[0].endswith("deeplab_v3_plus.yaml") and len(seen) >= 2


# --------------------------------------------------------------------------------------- tools

def _run_folder(folder, config_text=None, results_text=None):
    results = folder / "inference" / "val_set" / "sem_seg_results.json"
    results.parent.mkdir(parents=True)
    results.write_text(results_text if results_text is not None else json.dumps(
        {"sem_seg": {"mIoU": 50.0, "mACC": 60.0}, "per_class": []}))
    if config_text is not None:
        (folder / "config.yaml").write_text(config_text)
    return folder


def _tool_error(proc, *expected):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    line = _one_line(proc.stderr)
    assert line.startswith("error: ") and "Traceback" not in proc.stderr
    for text in expected:
        assert str(text) in line, line
    return line


def test_compare_results_refuses_a_python_tag_in_config_yaml(tmp_path):
    marker = tmp_path / "MARKER"
    run = _run_folder(tmp_path / "run", f'SEED: !!python/object/apply:os.system ["touch {marker}"]\n')
    proc = run_tool("compare_results.py", run, run, "--names", "A", "A", check=False)
    _tool_error(proc, run / "config.yaml", "Python tags")
    assert not marker.exists()


def test_compare_results_names_a_corrupt_config_yaml(tmp_path):
    run = _run_folder(tmp_path / "run", "SEED: 1\nSOLVER: [\n  BASE_LR: 0.1\n")
    proc = run_tool("compare_results.py", run, check=False)
    _tool_error(proc, run / "config.yaml", "not valid YAML")


def test_compare_results_names_a_truncated_results_file(tmp_path):
    run = _run_folder(tmp_path / "run", results_text='{"sem_seg": {"mIoU": 5')
    proc = run_tool("compare_results.py", run, check=False)
    _tool_error(proc, run / "inference" / "val_set" / "sem_seg_results.json", "not valid JSON")


def test_plot_results_names_a_truncated_results_file(tmp_path):
    run = _run_folder(tmp_path / "run", results_text='{"sem_seg": ')
    proc = run_tool("plot_results.py", run, "--output", tmp_path / "figures", check=False)
    _tool_error(proc, "sem_seg_results.json", "not valid JSON")


def test_plot_results_does_not_unpickle_a_confusion_matrix(tmp_path):
    run = _run_folder(tmp_path / "run")
    np.save(run / "inference" / "val_set" / "sem_seg_confusion_matrix.npy",
            np.array([_Payload(tmp_path / "MARKER")], dtype=object), allow_pickle=True)
    proc = run_tool("plot_results.py", run, "--output", tmp_path / "figures", check=False)
    _tool_error(proc, "sem_seg_confusion_matrix.npy", "pickled")
    assert not (tmp_path / "MARKER").exists()


def test_compare_lvis_results_names_truncated_files(tmp_path):
    run = tmp_path / "run"
    (run / "inference" / "lvis_val").mkdir(parents=True)
    (run / "inference" / "lvis_val" / "lvis_results.json").write_text('{"segm": {"AP": 1')
    proc = run_tool("compare_lvis_results.py", run, check=False)
    _tool_error(proc, "lvis_results.json", "not valid JSON")
    (run / "inference" / "lvis_val" / "lvis_results.json").write_text('{"segm": {"AP": 1.0}}')
    (run / "metrics.json").write_text('{"iteration": 0, "time": 0.1}\n{"iteration": 1, "ti')
    proc = run_tool("compare_lvis_results.py", run, check=False)
    _tool_error(proc, run / "metrics.json", "line 2")


def test_load_json_names_the_file(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text('{"counts": [1, 2')
    with pytest.raises(UnreadableFileError, match="stats.json line 1 is not valid JSON"):
        load_json(str(path))
