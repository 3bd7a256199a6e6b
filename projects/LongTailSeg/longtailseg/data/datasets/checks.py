"""The rules a registered dataset must meet for LongTailSeg to train, count and evaluate on it,
in one place.

A dataset of your own (a ``register_<family>.py`` beside ``register_synthetic.py``, or
``DatasetCatalog.register`` / ``MetadataCatalog.get(name).set(...)`` in your script) passes
:func:`check_dataset` when:

* it is registered in ``DatasetCatalog``;
* its metadata's ``evaluator_type`` is one of

  - ``sem_seg`` (semantic segmentation: the long-tail evaluator),
  - ``cityscapes_sem_seg`` (the same plus Cityscapes' own evaluator),
  - ``lvis`` (instance segmentation: Detectron2's LVISEvaluator);

* semantic segmentation: ``stuff_classes`` (class id ``i`` is ``stuff_classes[i]``; the class
  statistics and MODEL.SEM_SEG_HEAD.NUM_CLASSES follow its length) and ``ignore_label`` (the label
  value that is neither trained on nor evaluated, 255 in Detectron2's sets);
* LVIS: ``thing_classes`` and ``json_file``, the LVIS json whose categories each carry a
  ``frequency`` of ``r``, ``c`` or ``f``: the head / body / tail groups of the class statistics
  and APr / APc / APf come from it. :func:`check_lvis_frequencies` reads the json to check this
  (the loaders and the class count read it anyway).

Each failure is a one-line :class:`~longtailseg.errors.DatasetError` naming the dataset, the
metadata key and the fix. Metadata that lives in a file (``FileMetadata``) is read by these
checks, so a missing or malformed file is reported here too, naming the file.
"""
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...errors import DatasetError
from .register_synthetic import SYNTHETIC_DATASETS

SEM_SEG_KEYS = ("stuff_classes", "ignore_label")
LVIS_KEYS = ("thing_classes", "json_file")
# evaluator_type -> the metadata keys a dataset of that type must have.
REQUIRED_KEYS = {"sem_seg": SEM_SEG_KEYS, "cityscapes_sem_seg": SEM_SEG_KEYS, "lvis": LVIS_KEYS}
SEM_SEG_EVALUATOR_TYPES = ("sem_seg", "cityscapes_sem_seg")


def is_sem_seg_dataset(name):
    """Whether a registered dataset is labelled per pixel, by its metadata's ``evaluator_type`` (as
    Detectron2's DeepLab project chooses its training mapper); reads no file."""
    return MetadataCatalog.get(name).get("evaluator_type") in SEM_SEG_EVALUATOR_TYPES
_WHAT = {
    "stuff_classes": "the list of class names, id i -> stuff_classes[i]",
    "ignore_label": "the label value that is not trained on or evaluated, e.g. 255",
    "thing_classes": "the list of category names, contiguous id i -> thing_classes[i]",
    "json_file": "the path of the LVIS json the evaluator reads",
}
LVIS_FREQUENCIES = ("r", "c", "f")


def check_registered(name):
    """``name`` is in DatasetCatalog, else a one-line error naming the choices."""
    if name not in DatasetCatalog.list():
        raise DatasetError(
            f"dataset {name!r} is not registered; use one of Detectron2's builtin names "
            f"(e.g. ade20k_sem_seg_train, lvis_v1_train), LongTailSeg's (oxford_pet_pat_train, "
            f"nyuv2_13_pat_train, ...; datasets/README.md) or {', '.join(SYNTHETIC_DATASETS)}, "
            "or register it before the config is built (see longtailseg/data/datasets/checks.py)"
        )


def check_dataset(name):
    """The rules of this module's docstring (all but the LVIS json's contents); returns the
    dataset's metadata, with any metadata that lives in a file read."""
    check_registered(name)
    metadata = MetadataCatalog.get(name)
    evaluator_type = metadata.get("evaluator_type")
    if evaluator_type not in REQUIRED_KEYS:
        raise DatasetError(
            f"dataset {name}: metadata 'evaluator_type' is {evaluator_type!r}; LongTailSeg trains "
            f"and evaluates {', '.join(REQUIRED_KEYS)} sets: set it when registering, e.g. "
            f"MetadataCatalog.get({name!r}).set(evaluator_type='sem_seg'), or fix DATASETS.TRAIN / TEST"
        )
    for key in REQUIRED_KEYS[evaluator_type]:
        value = metadata.get(key)  # a FileMetadata key is read here (one line if its file is bad)
        if key.endswith("_classes"):
            usable = isinstance(value, (list, tuple)) and len(value) > 0
        elif key == "ignore_label":
            usable = isinstance(value, int) and not isinstance(value, bool)
        else:
            usable = isinstance(value, str) and bool(value)
        if not usable:
            raise DatasetError(
                f"dataset {name} ({evaluator_type}): metadata {key!r} is "
                f"{'missing' if value is None else repr(value)[:60]}; set it ({_WHAT[key]}) when "
                f"registering: MetadataCatalog.get({name!r}).set({key}=...)"
            )
    return metadata


def check_lvis_frequencies(name):
    """The categories of an LVIS set's ``json_file``, sorted by id, each checked to carry a
    ``frequency`` r / c / f and to match ``thing_classes`` in number; else one line."""
    metadata = check_dataset(name)
    path = metadata.json_file
    try:
        with open(path) as f:
            categories = json.load(f)["categories"]
    except FileNotFoundError:
        raise DatasetError(
            f"dataset {name}: {path} (metadata 'json_file') does not exist; put the LVIS json there "
            f"(DETECTRON2_DATASETS={os.getenv('DETECTRON2_DATASETS', 'datasets')}, see "
            "datasets/README.md) or fix the registration"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(
            f"dataset {name}: {path} (metadata 'json_file') is not an LVIS json with 'categories' "
            f"({type(e).__name__}: {str(e)[:80]}); use the official LVIS json (datasets/README.md)"
        ) from None
    lacking = [c.get("name", c.get("id")) for c in categories if c.get("frequency") not in LVIS_FREQUENCIES]
    if lacking:
        raise DatasetError(
            f"{path}: {len(lacking)} categories have no 'frequency' r/c/f (e.g. "
            f"{lacking[0]!r}), which LVIS evaluation groups AP by; use the official LVIS json "
            "(datasets/README.md)"
        )
    if len(categories) != len(metadata.thing_classes):
        raise DatasetError(
            f"dataset {name}: {path} has {len(categories)} categories but metadata 'thing_classes' "
            f"has {len(metadata.thing_classes)}; register the thing_classes of that json"
        )
    return sorted(categories, key=lambda c: c["id"])


def _lvis_annotation_defect(path, data):
    """The first annotation of an LVIS json that Detectron2's loader would assert on or train
    wrongly (an unknown category, an empty or degenerate segmentation, an unknown image, a
    repeated id), as one line naming the json, the annotation id and the fix; None if none."""
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        return (f"{path} is not an LVIS json (it needs the lists 'images', 'annotations' and "
                "'categories'); use the official LVIS json (datasets/README.md)")
    category_ids = {c.get("id") for c in data["categories"] if isinstance(c, dict)}
    image_ids = {i.get("id") for i in data["images"] if isinstance(i, dict)}
    seen = set()
    for annotation in data["annotations"]:
        if not isinstance(annotation, dict):
            return f"{path}: an annotation is a {type(annotation).__name__}, not an object; fix or remove it"
        where = f"{path}: annotation {annotation.get('id')!r}"
        fix = "fix it or remove the annotation"
        if annotation.get("id") in seen:
            return f"{where} appears twice (annotation ids must be unique); {fix}"
        seen.add(annotation.get("id"))
        if annotation.get("category_id") not in category_ids:
            return (f"{where} has category_id {annotation.get('category_id')!r}, which is not the id "
                    f"of any of the json's {len(category_ids)} categories; {fix}")
        if annotation.get("image_id") not in image_ids:
            return f"{where} has image_id {annotation.get('image_id')!r}, which is not in the json's images; {fix}"
        segmentation = annotation.get("segmentation")
        if not isinstance(segmentation, list) or not segmentation:
            return (f"{where} has an empty segmentation (LVIS masks are polygons "
                    "[[x1, y1, x2, y2, x3, y3, ...]]); give it its polygon or remove the annotation")
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) % 2 or len(polygon) < 6:
                size = len(polygon) if isinstance(polygon, list) else type(polygon).__name__
                return (f"{where} has a polygon of {size} coordinates, not a list of >= 3 (x, y) "
                        f"points; {fix}")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            return f"{where} has bbox {bbox!r}, not [x, y, width, height]; {fix}"
    return None


def lvis_json_error(name, path, error=None):
    """A DatasetError naming what is wrong in ``name``'s LVIS json ``path``, read here (only after
    the loader failed or loaded a bad category, so a good json is read once): the annotation at
    fault when one is, else ``error``, the loader's own."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        return DatasetError(f"{path} (dataset {name}) line {e.lineno} is not valid JSON ({e.msg}): it is "
                            "truncated or was edited; download or generate it again (datasets/README.md)")
    except (OSError, ValueError) as e:
        return DatasetError(f"{path} (dataset {name}) cannot be read as JSON ({type(e).__name__}: "
                            f"{str(e)[:80]}); download or generate it again (datasets/README.md)")
    defect = _lvis_annotation_defect(path, data)
    if defect:
        return DatasetError(defect)
    detail = f"{type(error).__name__}: {str(error).splitlines()[0][:100]}" if error is not None and str(error) \
        else type(error).__name__
    return DatasetError(f"dataset {name}: Detectron2's LVIS loader cannot read {path} ({detail}); "
                        "use the official LVIS json (datasets/README.md)")


def check_lvis_category_ids(name, dicts):
    """Every loaded annotation's category within ``thing_classes`` (Detectron2's loader maps an
    unknown category id to an out-of-range class without a word), else one line from the json."""
    metadata = MetadataCatalog.get(name)
    num_classes = len(metadata.thing_classes)
    for record in dicts:
        for annotation in record.get("annotations", ()):
            if not 0 <= annotation["category_id"] < num_classes:
                raise lvis_json_error(name, metadata.json_file, ValueError(
                    f"image {record.get('file_name')} has a category outside the {num_classes} "
                    "thing_classes"))
