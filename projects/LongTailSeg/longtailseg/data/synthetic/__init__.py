"""Synthetic long-tailed segmentation data in the real on-disk formats.

``generator.generate`` writes one seeded, byte-reproducible data set under a root folder:

* a semantic-segmentation set in two layouts, ``ADEChallengeData2016/`` (JPEG images,
  ``annotations_detectron2`` PNG labels) and ``cityscapes/`` (``leftImg8bit`` + ``gtFine``);
* an instance-segmentation set as LVIS v1 json (``lvis/``) with its images in ``coco/``;
* ``synthetic_classes.json``, the class names and colours the dataset registration reads.

The content is built to show the long-tail problem at toy scale. Classes come in colour families:
the family's frequent "head" class is a plain, noisy colour; its rarer classes carry a texture
(stripes, checks, dots, grid) on the same base colour, so they are learnable from local
appearance but easy to confuse with the head class. Semantic images are a few Voronoi cells of
head classes with body and tail objects pasted on top; each class's share of the training pixels
follows a fixed, steep schedule (head > 1 %, body 0.1-1 %, tail < 0.1 %, tail objects also small).
LVIS images hold non-overlapping instances on a neutral grey background, with the number of
training images per category falling steeply so that LVIS's rule gives rare, common and frequent
categories.

``generator.generate_profile`` writes a set with a real data set's class profile instead
(``profiles``): ``ade20k``, 150 classes whose shares of all training pixels are ADE20K's
published Ratio column to the pixel (``semantic_exact``), in the ADEChallengeData2016 layout; or
``lvis_v1``, LVIS v1's 1203 categories with their r / c / f split and scaled image counts, as
LVIS v1 json.

``pat_formats`` writes the two data sets PAT adds in their published formats instead:
Oxford-IIIT Pet's trimaps, list files and JPEGs, and NYUv2's ``nyu_depth_v2_labeled.mat`` (HDF5).

Modules: ``layout`` (folders, the classes file and its reader: all that dataset registration
imports), ``classes`` (class design and schedules), ``drawing``, ``semantic`` and ``lvis`` (the
two sets' planning, rendering and writers), ``semantic_exact``, ``profiles``, ``files``,
``generator``, ``pat_formats``. The generator imports only numpy, Pillow and pycocotools (and, for the Cityscapes
label ids at 19 classes, cityscapesscripts); Detectron2 only for the ``lvis_v1`` profile, whose
categories and image counts it reads from Detectron2's LVIS v1 tables.
"""
from .layout import CLASSES_FILE, FORMAT, GENERATE_COMMAND, read_synthetic_classes  # noqa: F401
