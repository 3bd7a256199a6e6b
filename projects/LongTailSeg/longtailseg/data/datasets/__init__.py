"""Dataset registration, one module per family (``register_<family>.py``, registered on import
from ``$DETECTRON2_DATASETS`` without reading a file), the rules a registered dataset must meet
(``checks.py``) and one-line errors for reading them (``catalog.py``).

A new family: a ``register_<family>.py`` that calls ``DatasetCatalog.register`` and puts its
metadata in ``MetadataCatalog`` (a ``metadata.FileMetadata`` for values kept in a file), imported
below; its sets must pass ``checks.check_dataset``.
"""
from . import register_synthetic  # noqa: F401  (registers the synthetic sets)
from . import register_oxford_pet, register_nyuv2  # noqa: F401  (Oxford-IIIT Pet, NYUv2 and PAT splits)
from .catalog import get_dataset_dicts_checked, missing_files_reported, prepare_dataset  # noqa: F401
from .checks import check_dataset, check_lvis_frequencies, is_sem_seg_dataset  # noqa: F401
from .metadata import FileMetadata  # noqa: F401
from .register_synthetic import SYNTHETIC_DATASETS, register_synthetic_datasets  # noqa: F401
