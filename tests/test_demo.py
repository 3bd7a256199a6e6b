"""tools/demo.py as a user runs it: predictions of tiny trained models drawn on images with the
dataset's class names and colours, MEDOE's experts side by side, one-line errors."""
import glob

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_TRAINING, run_tool, tiny_cfg

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from detectron2.modeling import build_model

DEEPLAB = "configs/synthetic/deeplab_v3_plus.yaml"
MEDOE = "configs/synthetic/medoe_deeplab.yaml"
MASK_RCNN = "configs/synthetic/mask_rcnn_baseline.yaml"
SCALE = 4
TITLE_BAND, GAP = 14, 4  # MEDOE panels: the title band above each, the gap between them


def _val_images(datasets_root, layout="ade"):
    folder = ("ADEChallengeData2016/images/validation/*.jpg" if layout == "ade"
              else "coco/val2017/*.jpg")
    return sorted(glob.glob(str(datasets_root / "synthetic" / folder)))


def _train_without_evaluation(config, datasets_root, out, *opts):
    run_tool("train_net.py", "--config-file", config, *TINY_TRAINING, "SOLVER.MAX_ITER", 3,
             "DATASETS.TEST", "()", "OUTPUT_DIR", out, *opts, datasets_root=datasets_root)
    return out / "model_final.pth"


@pytest.fixture(scope="module")
def medoe_weights(datasets_root, tmp_path_factory):
    return _train_without_evaluation(MEDOE, datasets_root, tmp_path_factory.mktemp("medoe"))


@pytest.fixture(scope="module")
def mask_rcnn_weights(datasets_root, tmp_path_factory):
    # A tiny learning rate: a from-scratch Mask R-CNN's first large steps leave only background.
    return _train_without_evaluation(MASK_RCNN, datasets_root, tmp_path_factory.mktemp("mask_rcnn"),
                                     "SOLVER.BASE_LR", 1e-5)


def _prediction(config, weights, image_path, output_dir):
    """The class map the model predicts for one 32x32 image (test size 32: no resizing)."""
    cfg = tiny_cfg(config.replace("configs/", ""), output_dir, "MODEL.WEIGHTS", weights)
    model = build_model(cfg).eval()
    DetectionCheckpointer(model).load(str(weights))
    image = np.asarray(Image.open(image_path).convert("RGB"))
    with torch.no_grad():
        out = model([{"image": torch.as_tensor(image.transpose(2, 0, 1).astype("float32")),
                      "height": 32, "width": 32}])[0]
    return image, out["sem_seg"].argmax(0).numpy()


def test_semantic_segmentation_is_drawn_in_the_dataset_colours(trained_baseline, datasets_root, tmp_path):
    images = _val_images(datasets_root)
    weights = trained_baseline / "model_final.pth"
    # a glob pattern, and the overrides trailing as tools/train_net.py takes them
    proc = run_tool("demo.py", "--config-file", DEEPLAB, "--input", str(datasets_root / "synthetic/ADE*/images/validation/*.jpg"),
                    "--output", tmp_path / "out", "--scale", SCALE, *TINY_TRAINING,
                    "MODEL.WEIGHTS", weights, datasets_root=datasets_root)
    assert f"wrote {len(images)} image(s)" in proc.stdout
    drawn = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert drawn == sorted(p.rsplit("/", 1)[1].replace(".jpg", ".png") for p in images)
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind

    image, labels = _prediction(DEEPLAB, weights, images[0], tmp_path / "stats")
    drawing = np.asarray(Image.open(tmp_path / "out" / drawn[0]).convert("RGB")).astype(float)
    assert drawing.shape == (32 * SCALE, 32 * SCALE, 3)
    # Visualizer paints each predicted class's colour over the image at alpha 0.8; outlines and
    # labels cover some pixels, so the typical pixel is compared.
    colours = np.asarray(MetadataCatalog.get("synthetic_ade_sem_seg_val").stuff_colors, dtype=float)
    expected = 0.8 * colours[labels] + 0.2 * image
    expected = expected.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    assert np.median(np.abs(drawing - expected).max(axis=2)) < 12
    # the colours of some other class ordering would not match
    shuffled = 0.8 * colours[(labels + 1) % len(colours)] + 0.2 * image
    shuffled = shuffled.repeat(SCALE, axis=0).repeat(SCALE, axis=1)
    assert np.median(np.abs(drawing - shuffled).max(axis=2)) > 30


def test_medoe_experts_are_drawn_side_by_side(medoe_weights, datasets_root, tmp_path):
    image_path = _val_images(datasets_root)[0]
    run_tool("demo.py", "--config-file", MEDOE, "--input", image_path, "--output", tmp_path,
             "--experts", "--scale", SCALE, "--opts", *TINY_TRAINING, "MODEL.WEIGHTS", medoe_weights,
             datasets_root=datasets_root)
    drawing = np.asarray(Image.open(tmp_path / "ADE_val_00000001.png").convert("RGB"))
    side = 32 * SCALE
    panels = 4  # the model's prediction, then its three experts
    assert drawing.shape == (TITLE_BAND + side, panels * side + (panels - 1) * GAP, 3)
    tiles = [drawing[TITLE_BAND:, k * (side + GAP):k * (side + GAP) + side] for k in range(panels)]
    # MED's prediction is expert 1's; the tail expert (3) owns other classes than expert 1
    assert np.array_equal(tiles[0], tiles[1])
    assert not np.array_equal(tiles[1], tiles[3])


def test_experts_of_a_model_without_experts_is_a_one_line_error(trained_baseline, datasets_root, tmp_path):
    proc = run_tool("demo.py", "--config-file", DEEPLAB, "--input", _val_images(datasets_root)[0],
                    "--output", tmp_path, "--experts", "MODEL.WEIGHTS", trained_baseline / "model_final.pth",
                    datasets_root=datasets_root, check=False)
    assert proc.returncode == 2
    assert "MEDOE" in _error_line(proc) and "MODEL.SEM_SEG_HEAD.NAME" in _error_line(proc)


def test_lvis_instances_are_drawn(mask_rcnn_weights, datasets_root, tmp_path):
    images = _val_images(datasets_root, "lvis")
    run_tool("demo.py", "--config-file", MASK_RCNN, "--input", *images, "--output", tmp_path,
             "--scale", SCALE, "--confidence-threshold", 0, "--opts", *TINY_TRAINING,
             "MODEL.WEIGHTS", mask_rcnn_weights, "TEST.DETECTIONS_PER_IMAGE", 5,
             datasets_root=datasets_root)
    assert len(list(tmp_path.glob("*.png"))) == len(images)
    name = images[0].rsplit("/", 1)[1].replace(".jpg", ".png")
    drawing = np.asarray(Image.open(tmp_path / name).convert("RGB")).astype(float)
    plain = np.asarray(Image.open(images[0]).convert("RGB").resize((32 * SCALE,) * 2, Image.NEAREST))
    assert drawing.shape == plain.shape
    # five detections drawn (boxes, masks, labels) change a good part of the picture
    assert (np.abs(drawing - plain).max(axis=2) > 40).mean() > 0.05


def _error_line(proc):
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_unreadable_image_is_a_one_line_error_naming_the_file(trained_baseline, datasets_root, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    proc = run_tool("demo.py", "--config-file", DEEPLAB, "--input", _val_images(datasets_root)[0], bad,
                    "--output", tmp_path / "out", "MODEL.WEIGHTS", trained_baseline / "model_final.pth",
                    datasets_root=datasets_root, check=False)
    assert proc.returncode == 2
    line = _error_line(proc)
    assert str(bad) in line and "cannot read image" in line
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ADE_val_00000001.png"]


@pytest.mark.parametrize("case", ["no weights", "missing weights", "missing input"])
def test_bad_arguments_are_one_line_errors(case, datasets_root, tmp_path):
    image = _val_images(datasets_root)[0]
    args = {"no weights": [image],
            "missing weights": [image, "MODEL.WEIGHTS", tmp_path / "none.pth"],
            "missing input": [tmp_path / "none.jpg", "MODEL.WEIGHTS", tmp_path / "none.pth"]}[case]
    proc = run_tool("demo.py", "--config-file", DEEPLAB, "--output", tmp_path, "--input", *args,
                    datasets_root=datasets_root, check=False)
    assert proc.returncode == 2
    line = _error_line(proc)
    expected = {"no weights": "MODEL.WEIGHTS is empty", "missing weights": str(tmp_path / "none.pth"),
                "missing input": str(tmp_path / "none.jpg")}[case]
    assert expected in line
