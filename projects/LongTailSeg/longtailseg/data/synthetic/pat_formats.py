"""Synthetic data in the published formats of the two data sets PAT adds, so that their loaders,
prepare scripts and the PAT tables run without the real data:

* :func:`write_oxford_pet`: Oxford-IIIT Pet's layout (``images/*.jpg``, ``annotations/trimaps/*.png``
  with 1 pet, 2 background, 3 boundary, ``annotations/{trainval,test,list}.txt``). One animal per
  image, an ellipse with a textured coat and a thin boundary band: background, body and boundary
  come out about 70 / 22 / 7 % of the pixels, a long tail of three classes as in the real trimaps.
* :func:`write_nyuv2_mat`: ``nyu_depth_v2_labeled.mat``'s layout (MATLAB v7.3, i.e. HDF5 with the
  512-byte MATLAB header; ``images`` N x 3 x W x H uint8, ``depths`` N x W x H float32, ``labels``
  N x W x H uint16, ``instances``, ``names`` / ``scenes`` / ``sceneTypes`` as references to
  character arrays), and ``classMapping40.txt``, the raw -> 40 table of its raw classes (the 40
  classes' own names plus a few raw names that map many-to-one, as the real 894 do). Indoor
  scenes: wall, a floor band, sometimes a ceiling band, then objects whose class is drawn with
  Zipf-like probabilities and whose size falls with rank, a few unlabelled patches: a steep long
  tail over the 13 and 40 classes.

Both are seeded and write into a staging folder moved into place at the end.
"""
import datetime
import os
import shutil
import tempfile

import numpy as np

from ...errors import DatasetError
from .files import save_jpeg, save_png

OXFORD_BREEDS = [("Abyssinian", 1, 1), ("Bengal", 1, 2), ("beagle", 2, 1), ("pug", 2, 2)]  # name, species, breed id


def _staged(folder, force, write):
    """Run ``write(staging)`` and move the staging folder to ``folder``."""
    folder = os.path.abspath(folder)
    if os.path.lexists(folder) and not force:
        raise DatasetError(f"{folder} already exists; pass --force to replace it")
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".tmp-synthetic-", dir=parent)
    try:
        write(staging)
        if os.path.lexists(folder):
            old = tempfile.mkdtemp(prefix=".tmp-replaced-", dir=parent)
            os.replace(folder, os.path.join(old, "old"))
            shutil.rmtree(old, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _check(num_images, size, min_size):
    if num_images < 3:
        raise DatasetError(f"--num-images must be at least 3 (PAT's split needs an image per split), got {num_images}")
    if size < min_size:
        raise DatasetError(f"--size must be at least {min_size} pixels, got {size}")


def oxford_pet_sample(rng, size):
    """(RGB image, trimap) of one synthetic pet: values 1 pet, 2 background, 3 boundary."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    cy, cx = rng.uniform(0.35, 0.65, 2) * size
    ry, rx = rng.uniform(0.2, 0.36, 2) * size
    distance = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    band = 0.6 / min(ry, rx)  # about 0.6 px on each side of the outline
    trimap = np.full((size, size), 2, np.uint8)
    trimap[distance < 1 - band] = 1
    trimap[np.abs(distance - 1) <= band] = 3
    background = rng.integers(40, 200, 3)
    coat = rng.integers(60, 240, 3)
    stripes = (np.sin(xx * rng.uniform(0.6, 1.2) + yy * 0.3) > 0)[..., None] * 40
    image = np.where(trimap[..., None] == 2, background, coat + stripes - 20).astype(np.float64)
    image[trimap == 3] = 0.5 * (background + coat)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), trimap


def write_oxford_pet(folder, num_images=12, size=32, seed=0, force=False):
    """Oxford-IIIT Pet's layout under ``folder`` (the set's own folder, e.g.
    ``$DETECTRON2_DATASETS/synthetic/oxford_pet``); the first half of the images is listed in
    ``trainval.txt``, the rest in ``test.txt``. Returns a summary dict."""
    _check(num_images, size, 16)
    rng = np.random.default_rng(seed)
    pixels = np.zeros(4, np.int64)

    def write(staging):
        os.makedirs(os.path.join(staging, "images"))
        os.makedirs(os.path.join(staging, "annotations", "trimaps"))
        lines = []
        for index in range(num_images):
            breed, species, breed_id = OXFORD_BREEDS[index % len(OXFORD_BREEDS)]
            name = f"{breed}_{index // len(OXFORD_BREEDS) + 1}"
            image, trimap = oxford_pet_sample(rng, size)
            pixels[:] += np.bincount(trimap.ravel(), minlength=4)
            save_jpeg(os.path.join(staging, "images", name + ".jpg"), image)
            save_png(os.path.join(staging, "annotations", "trimaps", name + ".png"), trimap)
            class_id = [b for b, _, _ in OXFORD_BREEDS].index(breed) + 1
            lines.append(f"{name} {class_id} {species} {breed_id}")
        half = (num_images + 1) // 2
        annotations = os.path.join(staging, "annotations")
        for file, part in (("trainval.txt", lines[:half]), ("test.txt", lines[half:]), ("list.txt", lines)):
            header = ("#Image CLASS-ID SPECIES BREED ID\n#ID: 1:4 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
                      if file == "list.txt" else "")
            with open(os.path.join(annotations, file), "w") as f:
                f.write(header + "".join(line + "\n" for line in part))

    folder = _staged(folder, force, write)
    shares = pixels[1:] / pixels[1:].sum()
    return {"folder": folder, "images": num_images, "size": size,
            "pixel_shares": {"body": float(shares[0]), "background": float(shares[1]), "boundary": float(shares[2])}}


# Raw classes of the synthetic .mat: the 40 classes' names (raw id = 40-class id) and extra raw
# names mapped many-to-one, as the real 894 are.
EXTRA_RAW_CLASSES = [("vase", 40), ("plant", 40), ("bottle", 40), ("cup", 40), ("column", 38),
                     ("stool", 39), ("bench", 39), ("fireplace", 38)]
# Object classes (40-class ids / raw ids) by frequency rank: the most frequent first.
OBJECT_RANKS = [4, 5, 7, 3, 6, 11, 9, 8, 23, 25, 10, 14, 12, 18, 16, 13, 15, 17, 19, 20, 21, 24,
                26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40]


def nyuv2_sample(rng, height, width, palette):
    """(RGB image, raw labels) of one synthetic indoor frame."""
    label = np.ones((height, width), np.uint16)  # wall
    floor = int(height * rng.uniform(0.2, 0.35))
    label[height - floor:] = 2
    if rng.random() < 0.5:
        label[:max(1, int(height * 0.1))] = 22  # ceiling
    ranks = np.arange(1, len(OBJECT_RANKS) + len(EXTRA_RAW_CLASSES) + 1, dtype=np.float64)
    probabilities = ranks ** -1.3 / (ranks ** -1.3).sum()
    raw_ids = OBJECT_RANKS + list(range(41, 41 + len(EXTRA_RAW_CLASSES)))
    for _ in range(rng.integers(3, 7)):
        rank = rng.choice(len(raw_ids), p=probabilities)
        side = max(2, int(min(height, width) * 0.45 / (1 + rank) ** 0.5 * rng.uniform(0.7, 1.2)))
        y, x = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        label[y:y + side, x:x + max(2, int(side * rng.uniform(0.6, 1.5)))] = raw_ids[rank]
    for _ in range(rng.integers(0, 3)):  # unlabelled patches
        y, x = rng.integers(0, height - 2), rng.integers(0, width - 2)
        label[y:y + 3, x:x + 3] = 0
    image = palette[label].astype(np.float64) + rng.normal(0, 10, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8), label


def _matlab_header():
    text = (f"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: "
            f"{datetime.datetime(2011, 1, 1):%a %b %d %H:%M:%S %Y} HDF5 schema 1.00 .")
    return text.ljust(116).encode("ascii") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def _char_refs(h5file, strings, prefix):
    import h5py

    refs = h5file.require_group("#refs#")
    out = []
    for i, text in enumerate(strings):
        chars = refs.create_dataset(f"{prefix}{i}", data=np.array([[ord(c)] for c in text] or [[0]], np.uint16))
        chars.attrs["MATLAB_class"] = np.bytes_("char")
        out.append(chars.ref)
    return np.array([out], dtype=h5py.ref_dtype)


def write_nyuv2_mat(folder, num_images=12, size=32, seed=0, force=False):
    """``nyu_depth_v2_labeled.mat`` (frames ``size`` wide, 3/4 as high, as the real 640 x 480) and
    ``classMapping40.txt`` under ``folder`` (e.g. ``$DETECTRON2_DATASETS/synthetic/nyuv2``).
    Returns a summary dict."""
    import h5py

    from ..datasets.register_nyuv2 import NYU40_CLASSES

    _check(num_images, size, 16)
    rng = np.random.default_rng(seed)
    height, width = size * 3 // 4, size
    names = NYU40_CLASSES + [name for name, _ in EXTRA_RAW_CLASSES]
    mapping = list(range(1, 41)) + [target for _, target in EXTRA_RAW_CLASSES]
    palette = rng.integers(20, 236, (len(names) + 1, 3))
    palette[0] = 0
    frames = [nyuv2_sample(rng, height, width, palette) for _ in range(num_images)]

    def write(staging):
        path = os.path.join(staging, "nyu_depth_v2_labeled.mat")
        with h5py.File(path, "w", userblock_size=512) as f:
            def put(key, array, matlab_class):
                f.create_dataset(key, data=array).attrs["MATLAB_class"] = np.bytes_(matlab_class)

            # MATLAB writes column-major: every array's axes reversed (H x W x 3 x N -> N x 3 x W x H).
            put("images", np.stack([image.transpose(2, 1, 0) for image, _ in frames]), "uint8")
            put("labels", np.stack([label.T for _, label in frames]), "uint16")
            depths = rng.uniform(0.7, 9.9, (num_images, 1, 1)) + 0.01 * np.arange(width)[None, :, None]
            put("depths", np.broadcast_to(depths, (num_images, width, height)).astype(np.float32), "single")
            put("instances", np.zeros((num_images, width, height), np.uint8), "uint8")
            f.create_dataset("names", data=_char_refs(f, names, "n")).attrs["MATLAB_class"] = np.bytes_("cell")
            scenes = [f"synthetic_room_{i // 3:04d}" for i in range(num_images)]
            f.create_dataset("scenes", data=_char_refs(f, scenes, "s")).attrs["MATLAB_class"] = np.bytes_("cell")
            f.create_dataset("sceneTypes", data=_char_refs(f, ["synthetic_room"] * num_images, "t")) \
                .attrs["MATLAB_class"] = np.bytes_("cell")
        with open(path, "r+b") as f:  # the MATLAB header in the userblock, as MATLAB writes it
            f.write(_matlab_header())
        with open(os.path.join(staging, "classMapping40.txt"), "w") as f:
            f.write("\n".join(map(str, mapping)) + "\n")

    folder = _staged(folder, force, write)
    counts = np.bincount(np.concatenate([label.ravel() for _, label in frames]), minlength=len(names) + 1)
    return {"folder": folder, "images": num_images, "size": (height, width), "raw_classes": len(names),
            "raw_classes_present": int((counts[1:] > 0).sum())}
