"""LongTailSeg: long-tailed semantic and instance segmentation methods as a Detectron2 extension.

Installs the package ``longtailseg`` from ``projects/LongTailSeg/``. Torch, torchvision and
Detectron2 are expected in the environment already (``make setup`` installs them: Detectron2 v0.6
comes from the registry's ``pb1-detectron2`` source distribution, see tools/install_detectron2.sh).
"""
import glob
import os
import shutil

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def model_zoo_configs():
    """The shipped configs as package data of ``longtailseg.model_zoo`` (as Detectron2 ships its
    own): ``longtailseg/model_zoo/configs`` links to (or, without symlinks, copies) the
    repository's ``configs/``, so an installed package finds them without a clone."""
    source = os.path.join(HERE, "configs")
    package = os.path.join(HERE, "projects", "LongTailSeg", "longtailseg", "model_zoo")
    destination = os.path.join(package, "configs")
    if os.path.isdir(source):
        if os.path.islink(destination):
            os.unlink(destination)
        elif os.path.isdir(destination):
            shutil.rmtree(destination)
        try:
            os.symlink(os.path.relpath(source, package), destination)
        except OSError:
            shutil.copytree(source, destination)
    return [os.path.relpath(p, package)
            for p in glob.glob(os.path.join(destination, "**", "*.yaml"), recursive=True)]


setup(
    name="longtailseg",
    version="0.1.0",
    description="Long-tailed segmentation (MEDOE, BLV, DisAlign, PAT) for Detectron2",
    license="Apache-2.0",
    packages=find_packages("projects/LongTailSeg", include=["longtailseg", "longtailseg.*"]),
    package_dir={"": "projects/LongTailSeg"},
    # The class statistics of the real training splits (longtailseg/data/published_stats.py).
    package_data={"longtailseg.model_zoo": model_zoo_configs(),
                  "longtailseg.data": ["class_stats_files/*.json"]},
    python_requires=">=3.9",
    # Detectron2 v0.6's runtime needs, declared here because it is installed with --no-deps
    # (its metadata pins black==21.4b2, fvcore<0.1.6 and iopath<0.1.10). lvis (LVIS evaluation)
    # is installed by tools/install_detectron2.sh without its dependencies, which would add
    # opencv-python next to opencv-python-headless.
    install_requires=[
        "torch",
        "torchvision",
        "numpy",
        "Pillow",
        "matplotlib",
        "pycocotools>=2.0.2",
        "termcolor",
        "yacs>=0.1.8",
        "tabulate",
        "cloudpickle",
        "tqdm",
        "tensorboard",
        "fvcore==0.1.5.post20221221",
        "iopath>=0.1.7",
        "omegaconf>=2.1",
        "hydra-core>=1.1",
        "opencv-python-headless",
        "cityscapesscripts",
        "shapely",
        # Round 3's networks, cluster launcher, export and data formats (see each module's
        # docstring for why this library): backbones and encoder-decoders, SLURM, ONNX, NYUv2.
        "timm==1.0.31",
        "segmentation-models-pytorch==0.6.0",
        "submitit==1.5.4",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "onnxscript",
        "h5py",
    ],
    extras_require={"test": ["pytest", "pytest-timeout"]},
)
