"""LVIS evaluation that keeps what a long-tail reader needs: Detectron2's LVISEvaluator numbers
(AP, APr, APc, APf of bbox and segm, by the ``lvis`` package's LVISEval) written to
``lvis_results.json``, and the AP of every category, with its frequency group and training image
count, written to ``lvis_per_category_ap.json`` (tools/plot_results.py draws the rare ones).

One LVISEval pass per task gives both: its ``eval["precision"]`` array (IoU thresholds x recall
points x categories x area ranges x ...) averaged over the IoU thresholds and recall points of one
category, area "all", is that category's AP, as LVISEval's own ``summarize`` averages it over
categories.
"""
import copy
import itertools
import json
import logging
import os

import numpy as np

from detectron2.evaluation import LVISEvaluator
from detectron2.utils import comm

from ..io import write_json_atomically

LVIS_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")
PER_CATEGORY_FILE_NAME = "lvis_per_category_ap.json"

logger = logging.getLogger(__name__)


def category_ap(lvis_eval):
    """{category id: AP in % or None (no ground truth)} from a run LVISEval."""
    precision = lvis_eval.eval["precision"]  # [IoU, recall, category, area]
    result = {}
    for k, category_id in enumerate(lvis_eval.params.cat_ids):
        values = precision[:, :, k, 0]
        values = values[values > -1]
        result[category_id] = float(100 * values.mean()) if values.size else None
    return result


def evaluate_lvis_task(lvis_gt, lvis_results, iou_type, max_dets_per_image):
    """(standard metrics in %, per-category AP) of one task, as Detectron2 v0.6 and main compute
    the former (segm AP on mask areas: the results' boxes dropped)."""
    from lvis import LVISEval, LVISResults

    if not lvis_results:
        logger.warning("No predictions from the model!")
        return {m: float("nan") for m in LVIS_METRICS}, {}
    if iou_type == "segm":
        lvis_results = copy.deepcopy(lvis_results)
        for result in lvis_results:
            result.pop("bbox", None)
    lvis_eval = LVISEval(lvis_gt, LVISResults(lvis_gt, lvis_results, max_dets=max_dets_per_image), iou_type)
    lvis_eval.run()
    lvis_eval.print_results()
    summary = lvis_eval.get_results()
    return {m: float(summary[m] * 100) for m in LVIS_METRICS}, category_ap(lvis_eval)


class SavedLVISEvaluator(LVISEvaluator):
    """Detectron2's LVISEvaluator that also writes ``lvis_results.json`` (as the semantic-
    segmentation evaluator writes ``sem_seg_results.json``; tools/compare_lvis_results.py reads
    it) and ``lvis_per_category_ap.json``.

    ``train_image_counts``: each category's number of training images (the class statistics),
    written beside its AP; else the evaluated json's ``image_count`` field."""

    def __init__(self, *args, train_image_counts=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._train_image_counts = train_image_counts
        self._per_category = {}

    def _eval_predictions(self, predictions):
        if not self._do_evaluation:
            return super()._eval_predictions(predictions)
        lvis_results = list(itertools.chain(*[x["instances"] for x in predictions]))
        tasks = self._tasks or self._tasks_from_predictions(lvis_results)
        mapping = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        to_json_id = ({v: k for k, v in mapping.items()} if mapping else None)
        for result in lvis_results:  # contiguous ids back to the json's (LVIS: 0- to 1-based)
            result["category_id"] = (to_json_id[result["category_id"]] if to_json_id
                                     else result["category_id"] + 1)
        if self._output_dir:
            write_json_atomically(lvis_results, os.path.join(self._output_dir, "lvis_instances_results.json"),
                                  indent=None)
        max_dets = getattr(self, "_max_dets_per_image", None) or 300  # LVIS's default
        for task in sorted(tasks):
            self._results[task], self._per_category[task] = evaluate_lvis_task(
                self._lvis_api, lvis_results, task, max_dets)

    def _per_category_content(self):
        categories = sorted(self._lvis_api.cats.values(), key=lambda c: c["id"])
        content = {}
        for task, ap in self._per_category.items():
            content[task] = [
                {"id": c["id"], "name": c.get("synonyms", [c["name"]])[0], "frequency": c.get("frequency"),
                 "image_count": (int(self._train_image_counts[i]) if self._train_image_counts is not None
                                 else c.get("image_count")),
                 "AP": ap.get(c["id"])}
                for i, c in enumerate(categories)
            ]
        return content

    def evaluate(self):
        results = super().evaluate()
        if results and self._output_dir and comm.is_main_process():
            write_json_atomically(results, os.path.join(self._output_dir, "lvis_results.json"))
            if self._per_category:
                source = "class statistics" if self._train_image_counts is not None else "annotation json"
                write_json_atomically({"image_count_source": source, **self._per_category_content()},
                                      os.path.join(self._output_dir, PER_CATEGORY_FILE_NAME), allow_nan=False)
        return results
