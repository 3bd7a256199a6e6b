"""Evaluation results of a long-tailed prediction at any class count, written by the project's own
evaluator (``LongTailSemSegEvaluator``) from label PNGs on disk: inputs for the figure tests.

The prediction of class c is right with a probability falling from 0.9 (most frequent class) to
0.2 (rarest); a wrong pixel is predicted as one of the three most frequent classes (the tail
swallowed by the head, what the confusion figures must show)."""
import os

import numpy as np
import torch
from PIL import Image

from longtailseg.evaluation.sem_seg_evaluation import LongTailSemSegEvaluator
from longtailseg.longtail import class_stats as cs

from detectron2.data import DatasetCatalog, MetadataCatalog


def write_results(output_dir, num_classes, seed=0, num_images=8, size=64, absent_from_training=2):
    """Evaluate one run's predictions into ``output_dir/inference/<dataset>/``; returns the dataset
    name. The last ``absent_from_training`` classes get a training share of 0."""
    dataset = f"long_tail_results_{num_classes}"
    rng = np.random.default_rng(1000 + num_classes)  # the same labels for every seed
    frequencies = 10.0 ** (-3.0 * np.arange(num_classes) / max(num_classes - 1, 1))
    frequencies /= frequencies.sum()
    labels_dir = os.path.join(output_dir, "labels")
    os.makedirs(labels_dir, exist_ok=True)
    records = []
    for i in range(num_images):
        label = rng.choice(num_classes, size=(size, size), p=frequencies).astype(np.uint8)
        label[rng.random((size, size)) < 0.05] = 255
        path = os.path.join(labels_dir, f"{i}.png")
        Image.fromarray(label).save(path)
        records.append({"file_name": f"image_{i}", "sem_seg_file_name": path, "height": size, "width": size})
    if dataset in DatasetCatalog.list():
        DatasetCatalog.remove(dataset)
        MetadataCatalog.remove(dataset)
    DatasetCatalog.register(dataset, lambda: records)
    MetadataCatalog.get(dataset).set(stuff_classes=[f"class {c}" for c in range(num_classes)], ignore_label=255)
    shares = frequencies.copy()
    if absent_from_training:
        shares[-absent_from_training:] = 0
    groups = cs.split_by_ratio(shares, 0.01, 0.001) if num_classes > 20 else {
        "head": list(range(num_classes // 3)), "body": list(range(num_classes // 3, 2 * num_classes // 3)),
        "tail": list(range(2 * num_classes // 3, num_classes))}
    evaluator = LongTailSemSegEvaluator(dataset, distributed=False,
                                        output_dir=os.path.join(output_dir, "inference", dataset),
                                        class_groups=groups, train_pixel_shares=shares.tolist())
    evaluator.reset()
    predict = np.random.default_rng(seed)
    right = np.linspace(0.9, 0.2, num_classes)
    for record in records:
        label = np.array(Image.open(record["sem_seg_file_name"])).astype(np.int64)
        keep = predict.random(label.shape) < right[np.minimum(label, num_classes - 1)]
        prediction = np.where(keep & (label < num_classes), label, predict.integers(0, 3, label.shape))
        logits = torch.nn.functional.one_hot(torch.from_numpy(prediction), num_classes).permute(2, 0, 1).float()
        evaluator.process([record], [{"sem_seg": logits}])
    evaluator.evaluate()
    return dataset
