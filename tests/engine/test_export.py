"""Export to TorchScript and ONNX (longtailseg/engine/export.py, tools/export_model.py): the exported
model's output equals eager PyTorch's within 1e-4, under TorchScript and under onnxruntime on the
CPU, on an image other than the one it was traced with, for every semantic-segmentation family
(each decode head, DisAlign calibrated, MEDOE with its MOE and an untrained ensemble) and the LVIS
Mask R-CNN; DisAlign's calibration is in the graph; no dropout or random op is; bad input is one
line."""
import json
import os

import pytest
import torch

from conftest import REPO, TINY_TRAINING, instance_batch, run_tool
from longtailseg.engine import build_model, load_config
from longtailseg.engine import export as ex
from longtailseg.errors import ConfigError
from longtailseg.longtail import class_stats as cs
from longtailseg.longtail.calibration import DisAlignCalibration
from longtailseg.longtail.experts import MOEDecisionMaker

TOLERANCE = 1e-4


def _model(tmp_path, config, *opts, task="sem_seg"):
    """The synthetic config's model with random weights (stage-2 parameters moved off their
    identity start), built from a synthetic profile's class statistics, ready to export."""
    stats = tmp_path / "class_stats.json"
    cs.save(cs.synthetic_long_tail(19, task), str(stats))
    cfg = load_config(os.path.join(REPO, "configs", "synthetic", f"{config}.yaml"),
                      TINY_TRAINING + ["MODEL.LONG_TAIL.CLASS_STATS", str(stats), "MODEL.WEIGHTS", ""]
                      + [str(o) for o in opts])
    torch.manual_seed(0)
    model = build_model(cfg, load_weights=False)
    for module in model.modules():
        if isinstance(module, (DisAlignCalibration, MOEDecisionMaker)):
            with torch.no_grad():
                for p in module.parameters():
                    p.add_(torch.randn_like(p) * 0.5)
    return ex.without_dropout(model.eval()), cfg


def _images(size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, size, size), generator=g).float() for _ in range(2)]


def _eager(model, image):
    """The semantic segmentor's own inference (Detectron2's SemanticSegmentor.forward)."""
    with torch.no_grad():
        return (model([{"image": image}])[0]["sem_seg"],)


def _export_and_compare(model, export_format, folder, size=32):
    trace_image, other_image = _images(size)
    path, adapter = ex.export(model, trace_image, export_format, str(folder))
    exported = ex.load_exported(path)
    expected = _eager(model, other_image)
    actual = exported(other_image)
    assert ex.max_difference(expected, actual) <= TOLERANCE, ex.max_difference(expected, actual)
    assert ex.training_only_ops(path) == []
    return path, expected, actual


SEM_SEG = [
    ("deeplab_v3_plus", ["MODEL.SEM_SEG_HEAD.ASPP_DROPOUT", 0.1]),
    ("disalign_deeplab", []),
    ("medoe_deeplab", []),
    ("medoe_deeplab_moe", []),
    ("medoe_deeplab", ["MODEL.MEDOE.ENSEMBLE", "softmax_threshold"]),
    ("fcn", []), ("ocrnet", []),
    # 96 px: res5 (stride 16) is 6 x 6, which every pool scale (1, 2, 3, 6) divides (ONNX's pooling)
    ("pspnet", ["INPUT.MIN_SIZE_TEST", 96, "INPUT.MAX_SIZE_TEST", 96]),
]


@pytest.mark.parametrize("export_format", ex.FORMATS)
@pytest.mark.parametrize("config, opts", SEM_SEG, ids=[c + "".join("-" + str(o) for o in opts[1:2]) for c, opts in SEM_SEG])
def test_sem_seg_export_equals_eager(config, opts, export_format, tmp_path):
    model, cfg = _model(tmp_path, config, *opts)
    size = cfg.INPUT.MIN_SIZE_TEST
    _, expected, actual = _export_and_compare(model, export_format, tmp_path / "export", size)
    assert actual[0].shape == (19, size, size)


def test_pspnet_onnx_at_a_size_its_pooling_cannot_take_is_one_line(tmp_path):
    model, _ = _model(tmp_path, "pspnet")
    with pytest.raises(ex.ExportError, match=r"^ONNX cannot express this model at input size \(32, 32\): .*"
                                             r"adaptive_avg_pool2d.*pick --size accordingly") as error:
        ex.export(model, _images()[0], "onnx", str(tmp_path / "export"))
    assert "\n" not in str(error.value)


def test_disalign_calibration_is_in_the_exported_graph(tmp_path):
    model, _ = _model(tmp_path, "disalign_deeplab")
    path, calibrated, exported = _export_and_compare(model, "torchscript", tmp_path / "export")
    model.sem_seg_head.long_tail.calibration = None  # the stage-1 logits
    uncalibrated = _eager(model, _images()[1])
    assert ex.max_difference(uncalibrated, exported) > 0.1  # the graph applies alpha, beta, sigma(x)


def test_dropout_would_be_traced_without_its_removal(tmp_path):
    """Tracing in eval mode still records aten::dropout(train=False) (DeepLab's ASPP drops out
    functionally): the check sees it, so the exported graphs above hold none because the export
    removed them."""
    model, cfg = _model(tmp_path, "deeplab_v3_plus", "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT", 0.1)
    with_dropout = build_model(cfg, load_weights=False).eval()
    with_dropout.load_state_dict(model.state_dict())
    image = _images()[0]
    traced = torch.jit.trace(ex.traceable(with_dropout, image), (image,), check_trace=False)
    traced.save(str(tmp_path / "model.ts"))
    assert ex.training_only_ops(str(tmp_path / "model.ts")) == ["aten::dropout"]


@pytest.mark.parametrize("export_format", ex.FORMATS)
def test_lvis_mask_rcnn_export_equals_eager_with_a_varying_number_of_detections(export_format, tmp_path):
    model, _ = _model(tmp_path, "mask_rcnn_cosine_disalign", task="instances")
    trace_image, other_image = (instance_batch(size=64, seed=s)[0]["image"] for s in (0, 3))
    # A score threshold that keeps about 100 of the traced image's 300 detections, so the
    # number of detections is the data's, not the trace's
    scores = ex.eager_outputs(ex.traceable(model, trace_image), trace_image)[3]
    model.roi_heads.box_predictor.test_score_thresh = scores.sort(descending=True).values[100].item()
    path, adapter = ex.export(model, trace_image, export_format, str(tmp_path / "export"))
    traced_count = len(ex.eager_outputs(adapter, trace_image)[0])
    expected, actual = ex.eager_outputs(adapter, other_image), ex.load_exported(path)(other_image)
    assert ex.output_names(adapter) == ["pred_boxes", "pred_classes", "pred_masks", "scores", "image_size"]
    boxes, classes, masks, scores = expected[:4]
    assert 0 < len(boxes) != traced_count and masks.shape[1:] == (1, 28, 28), (len(boxes), traced_count)
    assert ex.max_difference(expected, actual) <= TOLERANCE
    assert ex.training_only_ops(path) == []
    assert ("NonMaxSuppression" if export_format == "onnx" else "torchvision::nms") in ex.graph_ops(path)


def test_tool_exports_a_trained_model_to_onnx(trained_baseline, datasets_root, tmp_path):
    out = tmp_path / "export"
    proc = run_tool("export_model.py", "--config-file", "configs/synthetic/deeplab_v3_plus.yaml",
                    "--format", "onnx", "--output", out, *TINY_TRAINING,
                    "MODEL.WEIGHTS", trained_baseline / "model_final.pth", datasets_root=datasets_root)
    info = json.loads((out / "export_info.json").read_text())
    assert info["input"] == {"name": "image", "shape": [3, 32, 32], "dtype": "float32", "range": [0, 255],
                             "channels": "RGB"}
    assert info["max_abs_difference_from_pytorch"] <= TOLERANCE and info["training_only_ops"] == []
    assert "largest difference from PyTorch" in proc.stdout
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert [o.name for o in session.get_outputs()] == ["sem_seg"]


def test_tool_bad_input_is_one_line(datasets_root, tmp_path):
    proc = run_tool("export_model.py", "--config-file", "configs/synthetic/deeplab_v3_plus.yaml",
                    "--output", tmp_path, "MODEL.WEIGHTS", "missing/model_final.pth",
                    datasets_root=datasets_root, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == ("error: MODEL.WEIGHTS=missing/model_final.pth does not exist; train "
                                   "the model first or fix the path"), proc.stderr


@pytest.mark.parametrize("opts, message", [
    (["MODEL.WEIGHTS", ""], r"^MODEL\.WEIGHTS is empty; pass the trained model to export"),
    (["MODEL.META_ARCHITECTURE", "PanopticFPN", "MODEL.WEIGHTS", "x.pth"],
     r"^MODEL\.META_ARCHITECTURE 'PanopticFPN' cannot be exported; export_model\.py exports SemanticSegmentor"),
], ids=["no-weights", "unsupported-model"])
def test_unexportable_configs_are_refused_before_building(opts, message):
    cfg = load_config(os.path.join(REPO, "configs", "synthetic", "deeplab_v3_plus.yaml"), opts)
    with pytest.raises(ConfigError, match=message):
        ex.exportable_model(cfg, "onnx")


def test_medoe_oracle_is_refused():
    cfg = load_config(os.path.join(REPO, "configs", "synthetic", "medoe_deeplab.yaml"),
                      ["MODEL.MEDOE.ORACLE", "True"])
    with pytest.raises(ConfigError, match="ORACLE True reads the test labels and cannot be exported"):
        ex.check_exportable(cfg, "onnx")
