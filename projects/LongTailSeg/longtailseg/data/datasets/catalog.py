"""Reading a registered dataset with one-line errors: the step every LongTailSeg reader goes
through (``prepare_dataset``) and a loading guard for missing files of any set."""
import contextlib
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ...errors import DatasetError
from .checks import check_lvis_category_ids, check_registered, lvis_json_error
from .metadata import FileMetadata


def prepare_dataset(name):
    """Make sure ``name`` is registered and its metadata that lives in a file is read (one line
    naming the file if it cannot be); returns the metadata. ``checks.check_dataset`` also applies
    the rules of what the metadata must hold."""
    check_registered(name)
    metadata = MetadataCatalog.get(name)
    if isinstance(metadata, FileMetadata):
        metadata.load()
    return metadata


@contextlib.contextmanager
def missing_files_reported(names):
    """Turn a loader's FileNotFoundError into a one-line DatasetError naming the path."""
    try:
        yield
    except FileNotFoundError as e:
        path = e.filename or str(e)
        raise DatasetError(
            f"dataset {', '.join(names)}: {path} does not exist; put the data under "
            f"DETECTRON2_DATASETS={os.getenv('DETECTRON2_DATASETS', 'datasets')} as "
            "datasets/README.md describes, or set DETECTRON2_DATASETS"
        ) from None


def get_dataset_dicts_checked(name):
    """``DatasetCatalog.get`` with missing files of any registered set reported in one line, and
    an LVIS json that Detectron2's loader asserts on, or loads with an unknown category, reported
    naming the annotation (``checks.lvis_json_error``)."""
    metadata = prepare_dataset(name)
    json_file = metadata.get("json_file") if metadata.get("evaluator_type") == "lvis" else None
    with missing_files_reported([name]):
        try:
            dicts = DatasetCatalog.get(name)
        except (AssertionError, KeyError, IndexError, TypeError, ValueError) as e:
            if not json_file or isinstance(e, DatasetError):
                raise
            raise lvis_json_error(name, json_file, e) from None
    if json_file:
        check_lvis_category_ids(name, dicts)
    return dicts
