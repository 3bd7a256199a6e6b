"""LongTailSeg's config: the keys and their defaults (``add_longtailseg_config``) and the questions
the rest of the package asks of a config (which class statistics it names, whether it needs class
counts). Below ``data/`` and ``modeling/``: both ask, neither answers for the other."""
from .class_stats import class_stats_from_config, long_tail_needs_class_counts  # noqa: F401
from .defaults import add_longtailseg_config  # noqa: F401
from .detectron2_main import check_detectron2_main_keys  # noqa: F401
