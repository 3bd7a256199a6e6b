"""Detectron2 v0.6 here: its removed numpy / Pillow names are rewritten in the installed files,
the missing C++ ops get a placeholder at run time, and a complete Detectron2 is left alone."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import longtailseg._compat as compat
from conftest import REPO

COMPAT_FILE = compat.__file__
sys.path.insert(0, os.path.join(REPO, "tools"))
import patch_legacy_sources  # noqa: E402


COMPILED_OPS = compat._detectron2_has_compiled_ops(compat._package_folders("detectron2"))


def test_a_detectron2_with_compiled_ops_gets_no_placeholder():
    if not COMPILED_OPS:
        pytest.skip("this Detectron2 is the Python-only v0.6 (make setup); make test-detectron2-main runs this")
    assert compat.APPLIED == []
    from detectron2 import _C

    assert _C.__file__ and not isinstance(_C, compat._MissingCOps)


@pytest.mark.skipif(COMPILED_OPS, reason="Detectron2 with its compiled C++ ops needs no placeholder")
def test_v06_here_runs_without_run_time_name_patches():
    assert compat.APPLIED == ["detectron2._C"]
    assert "float" not in vars(np) and "int" not in vars(np)  # numpy itself is untouched
    from PIL import Image

    assert not hasattr(Image, "LINEAR")
    # modules that import _C or used removed names import, and the rewritten code runs
    import detectron2.evaluation  # noqa: F401
    import detectron2.layers.deform_conv  # noqa: F401
    from detectron2 import _C
    from detectron2.structures import BitMasks, PolygonMasks

    polygons = PolygonMasks([[np.array([0.0, 0.0, 8.0, 0.0, 8.0, 8.0])]])
    assert BitMasks.from_polygon_masks(polygons, 10, 10).tensor.sum() > 0  # used np.bool
    with pytest.raises(RuntimeError, match="built without its C\\+\\+ ops: deformable convolution"):
        _C.deform_conv_forward


def test_the_patch_tool_rewrites_only_the_removed_names_and_is_idempotent(tmp_path):
    source = ("a = np.float(x) + np.int32(1)\nb = x.astype(np.bool)\nc = np.int_\n"
              "d = Image.LINEAR\ne = Image.BILINEAR\nf = np.integer\ng = np.str\n"
              "h = np.in1d( p , q , invert=True ).reshape(p.shape)\n")
    path = tmp_path / "pkg" / "mod.py"
    path.parent.mkdir()
    path.write_text(source)
    (tmp_path / "pkg" / "clean.py").write_text("x = np.float64(1)\n")
    changed = patch_legacy_sources.patch_folder(str(tmp_path / "pkg"))
    assert changed == {str(path): 5}
    assert path.read_text() == ("a = float(x) + np.int32(1)\nb = x.astype(bool)\nc = np.int_\n"
                                "d = Image.BILINEAR\ne = Image.BILINEAR\nf = np.integer\ng = str\n"
                                "h = np.isin( p , q , invert=True ).reshape(p.shape)\n")
    assert patch_legacy_sources.patch_folder(str(tmp_path / "pkg")) == {}


def test_installed_cityscapesscripts_is_patched_for_this_numpy():
    """Detectron2's Cityscapes evaluator runs cityscapesscripts' evaluation, which called
    np.in1d (removed in numpy 2.4) until tools/patch_legacy_sources.py rewrote it."""
    folder = patch_legacy_sources.package_folder("cityscapesscripts")
    assert "cityscapesscripts" in patch_legacy_sources.PACKAGES and folder
    for name in ("evalPixelLevelSemanticLabeling.py", "evalInstanceLevelSemanticLabeling.py"):
        with open(os.path.join(folder, "evaluation", name), encoding="utf-8") as f:
            text = f.read()
        assert "np.in1d(" not in text and "np.isin(" in text, name


def _import_compat_with(tmp_path, transform_source=None, with_compiled_ops=False):
    """Import the compat module in a fresh interpreter that sees only a fake detectron2 package
    (or none when ``transform_source`` is None)."""
    site = tmp_path / "site"
    site.mkdir()
    if transform_source is not None:
        pkg = site / "detectron2"
        (pkg / "data" / "transforms").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / "transforms" / "transform.py").write_text(transform_source)
        if with_compiled_ops:
            (pkg / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        sys.path = [p for p in sys.path if "site-packages" not in p]
        sys.path.insert(0, {str(site)!r})
        spec = importlib.util.spec_from_file_location("compat_under_test", {COMPAT_FILE!r})
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except ImportError as e:
            print("ImportError:", e)
        else:
            print(module.APPLIED, "detectron2._C" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_modern_complete_detectron2_is_left_alone(tmp_path):
    modern = "from PIL import Image\ninterp = Image.BILINEAR\n"
    assert _import_compat_with(tmp_path, modern, with_compiled_ops=True) == "[] False"


def test_patched_v06_without_ops_gets_only_the_placeholder(tmp_path):
    patched = "from PIL import Image\ninterp = Image.BILINEAR\n"
    assert _import_compat_with(tmp_path, patched) == "['detectron2._C'] True"


def test_unpatched_v06_is_refused_with_the_fix(tmp_path):
    out = _import_compat_with(tmp_path, "from PIL import Image\ninterp = Image.LINEAR\n")
    assert out.startswith("ImportError:") and "transform.py still uses names" in out
    assert "tools/patch_legacy_sources.py" in out


def test_no_detectron2_says_how_to_install_one(tmp_path):
    out = _import_compat_with(tmp_path)
    assert out.startswith("ImportError: LongTailSeg needs Detectron2, which is not installed")
    assert "make setup" in out
