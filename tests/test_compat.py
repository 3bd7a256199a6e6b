"""Detectron2 v0.6 here works by itself: tools/patch_legacy_sources.py rewrites its removed numpy /
Pillow names in the installed files and installs a placeholder for its missing C++ ops, so any
import order works; ``import longtailseg`` only checks, and leaves a complete Detectron2 alone."""
import importlib.machinery
import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import longtailseg._compat as compat
from conftest import REPO

COMPAT_FILE = compat.__file__
TOOL = os.path.join(REPO, "tools", "patch_legacy_sources.py")
sys.path.insert(0, os.path.join(REPO, "tools"))
import patch_legacy_sources  # noqa: E402

DETECTRON2 = patch_legacy_sources.package_folder("detectron2")
COMPILED_OPS = compat._detectron2_has_compiled_ops(compat._package_folders("detectron2"))
needs_placeholder = pytest.mark.skipif(
    COMPILED_OPS, reason="Detectron2 with its compiled C++ ops needs no placeholder")
SO_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def run_python(code, *args, site=None):
    """Run ``code`` in a fresh interpreter of this environment (``site`` first on its path);
    returns the finished process."""
    prelude = f"import sys; sys.path.insert(0, {str(site)!r})\n" if site else ""
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=300)


def test_the_compat_check_matches_the_installed_detectron2():
    assert compat.C_OPS == ("compiled" if COMPILED_OPS else "placeholder")
    assert "float" not in vars(np) and "int" not in vars(np)  # numpy itself is untouched
    from PIL import Image

    assert not hasattr(Image, "LINEAR")


def test_detectron2_alone_imports_its_trainer_and_reports_its_build():
    """Without longtailseg: Detectron2's trainer, the modules that import _C, and collect_env
    (which default_setup prints) all work."""
    out = run_python("""
        import sys
        from detectron2.engine import DefaultTrainer
        import detectron2.evaluation, detectron2.layers.deform_conv, detectron2.layers.rotated_boxes
        from detectron2.utils.collect_env import collect_env_info
        info = collect_env_info()
        assert "longtailseg" not in sys.modules
        print([row for row in info.splitlines() if row.startswith(("detectron2._C", "Compiler"))])
    """)
    assert out.returncode == 0, out.stderr
    if COMPILED_OPS:
        assert "not built correctly" not in out.stdout
    else:
        assert "Compiler" in out.stdout and "none: Python-only Detectron2" in out.stdout


@needs_placeholder
def test_detectron2_alone_gets_the_installed_placeholder_whose_ops_raise_one_line():
    out = run_python("""
        import sys
        import detectron2._C as C
        assert "longtailseg" not in sys.modules
        print(C.__file__)
        try:
            C.deform_conv_forward
        except RuntimeError as e:
            print(e)
    """)
    assert out.returncode == 0, out.stderr
    path, error = out.stdout.splitlines()  # the error is one line
    assert path == os.path.join(DETECTRON2, "_C.py")
    with open(path, encoding="utf-8") as f:  # what make setup installs today
        assert f.read() == patch_legacy_sources.C_PLACEHOLDER
    assert error.startswith("detectron2._C.deform_conv_forward is unavailable: this Detectron2 "
                            "was installed without its C++ ops (deformable convolution")
    assert "install Detectron2 built from source" in error


def test_detectron2_first_then_longtailseg():
    out = run_python("""
        import detectron2.engine
        from detectron2 import _C
        import longtailseg
        from detectron2.config import get_cfg
        cfg = get_cfg()
        longtailseg.add_longtailseg_config(cfg)
        print(longtailseg._compat.__file__, longtailseg._compat.C_OPS, "LONG_TAIL" in cfg.MODEL)
    """)
    assert out.returncode == 0, out.stderr
    ops = "compiled" if COMPILED_OPS else "placeholder"
    assert out.stdout.split() == [COMPAT_FILE, ops, "True"]


@needs_placeholder
def test_v06_here_runs_the_rewritten_code():
    import detectron2.layers.deform_conv  # noqa: F401  (imports _C)
    from detectron2.structures import BitMasks, PolygonMasks

    polygons = PolygonMasks([[np.array([0.0, 0.0, 8.0, 0.0, 8.0, 8.0])]])
    assert BitMasks.from_polygon_masks(polygons, 10, 10).tensor.sum() > 0  # used np.bool


def test_a_detectron2_with_compiled_ops_is_used_as_it_is():
    if not COMPILED_OPS:
        pytest.skip("this Detectron2 is the Python-only v0.6 (make setup); "
                    "make test-detectron2-main runs this")
    from detectron2 import _C

    assert _C.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert not os.path.exists(os.path.join(DETECTRON2, "_C.py"))


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


def _copy_without_c_ops(site):
    """A copy of the installed detectron2 package under ``site`` without any _C (as pip leaves
    v0.6 before the patch tool runs)."""
    copy = site / "detectron2"
    shutil.copytree(DETECTRON2, copy, ignore=shutil.ignore_patterns("__pycache__", "_C.*"))
    return copy


@needs_placeholder  # Detectron2 main imports its engine without _C: nothing fails before the patch
def test_the_patch_tool_installs_the_placeholder_into_a_detectron2_copy(tmp_path):
    copy = _copy_without_c_ops(tmp_path)
    trainer = ("from detectron2.engine import DefaultTrainer; import detectron2; "
               "print(detectron2.__file__)")
    before = run_python(trainer, site=tmp_path)
    assert "cannot import name '_C'" in before.stderr

    first = subprocess.run([sys.executable, TOOL, "--folder", str(copy)], capture_output=True,
                           text=True, check=True)
    assert f"{copy / '_C.py'}: placeholder for the missing C++ ops written" in first.stdout
    assert (copy / "_C.py").read_text() == patch_legacy_sources.C_PLACEHOLDER
    after = run_python(trainer, site=tmp_path)
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == str(copy / "__init__.py")

    files = {p: p.read_bytes() for p in copy.rglob("*.py")}
    again = subprocess.run([sys.executable, TOOL, "--folder", str(copy)], capture_output=True,
                           text=True, check=True)
    assert "placeholder for the missing C++ ops up to date" in again.stdout
    assert {p: p.read_bytes() for p in copy.rglob("*.py")} == files


def test_an_older_placeholder_is_replaced(tmp_path):
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "_C.py").write_text(patch_legacy_sources.C_PLACEHOLDER_MARKER + "\nold = 1\n")
    assert patch_legacy_sources.install_c_placeholder(str(tmp_path)) == "written"
    assert (tmp_path / "_C.py").read_text() == patch_legacy_sources.C_PLACEHOLDER


def test_the_placeholder_is_listed_in_the_distribution_record(tmp_path):
    """So that ``pip uninstall`` removes it with Detectron2."""
    distribution = importlib.metadata.packages_distributions().get("detectron2", [None])[0]
    files = [str(f) for f in importlib.metadata.distribution(distribution).files or []]
    if "detectron2/__init__.py" not in files:
        pytest.skip("this Detectron2's distribution does not list its files (an editable install)")
    dist_info = importlib.metadata.distribution(distribution)._path
    copy = _copy_without_c_ops(tmp_path)
    shutil.copytree(dist_info, tmp_path / dist_info.name)
    record = tmp_path / dist_info.name / "RECORD"
    record.write_text("".join(line + "\n" for line in record.read_text().splitlines()
                              if not line.startswith("detectron2/_C")))
    assert patch_legacy_sources.install_c_placeholder(str(copy)) == "written"
    assert patch_legacy_sources.install_c_placeholder(str(copy)) == "up to date"
    lines = record.read_text().splitlines()
    assert lines.count("detectron2/_C.py,,") == 1 and "detectron2/__init__.py" in record.read_text()


def test_the_patch_tool_leaves_a_folder_with_compiled_ops_alone(tmp_path):
    pkg = tmp_path / "detectron2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / f"_C{SO_SUFFIX}").write_bytes(b"\x7fELF")
    out = subprocess.run([sys.executable, TOOL, "--folder", str(pkg)], capture_output=True,
                         text=True, check=True)
    assert f"compiled C++ ops {pkg / f'_C{SO_SUFFIX}'} found, no placeholder" in out.stdout
    assert sorted(p.name for p in pkg.iterdir()) == sorted(["__init__.py", f"_C{SO_SUFFIX}"])


def test_the_patch_tool_refuses_a_foreign_c_module(tmp_path):
    pkg = tmp_path / "detectron2"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_C.py").write_text("something = 'else'\n")
    out = subprocess.run([sys.executable, TOOL, "--folder", str(pkg)], capture_output=True,
                         text=True)
    assert out.returncode == 1
    assert out.stderr == (f"error: {pkg / '_C.py'} is not LongTailSeg's placeholder for the C++ "
                          "ops; remove it and run this tool again\n")
    assert (pkg / "_C.py").read_text() == "something = 'else'\n"


def test_installed_cityscapesscripts_is_patched_for_this_numpy():
    """Detectron2's Cityscapes evaluator runs cityscapesscripts' evaluation, which called
    np.in1d (removed in numpy 2.4) until tools/patch_legacy_sources.py rewrote it."""
    folder = patch_legacy_sources.package_folder("cityscapesscripts")
    assert "cityscapesscripts" in patch_legacy_sources.PACKAGES and folder
    for name in ("evalPixelLevelSemanticLabeling.py", "evalInstanceLevelSemanticLabeling.py"):
        with open(os.path.join(folder, "evaluation", name), encoding="utf-8") as f:
            text = f.read()
        assert "np.in1d(" not in text and "np.isin(" in text, name


PATCHED = "from PIL import Image\ninterp = Image.BILINEAR\n"


def _import_compat_with(tmp_path, transform_source=None, c_files=(), init=True):
    """Import the compat module in a fresh interpreter that sees only a fake detectron2 package
    (none when ``transform_source`` is None) holding ``c_files`` ({name: bytes}) and, if ``init``,
    its ``__init__.py``; returns the check's answer or the ImportError, and whether anything
    imported or registered _C."""
    site = tmp_path / "site"
    site.mkdir()
    if transform_source is not None:
        pkg = site / "detectron2"
        (pkg / "data" / "transforms").mkdir(parents=True)
        if init:
            (pkg / "__init__.py").write_text("")
        (pkg / "data" / "transforms" / "transform.py").write_text(transform_source)
        for name, data in dict(c_files).items():
            (pkg / name).write_bytes(data)
    code = f"""
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
            print(module.C_OPS, "detectron2._C" in sys.modules)
    """
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1  # one line
    return out.stdout.strip()


def test_modern_complete_detectron2_is_left_alone(tmp_path):
    compiled = {f"_C{SO_SUFFIX}": b"\x7fELF"}
    assert _import_compat_with(tmp_path, PATCHED, compiled) == "compiled False"


def test_compiled_ops_beside_a_leftover_placeholder_count_as_compiled(tmp_path):
    """Python imports the extension before _C.py, so the compiled ops are what runs."""
    both = {f"_C{SO_SUFFIX}": b"\x7fELF", "_C.py": patch_legacy_sources.C_PLACEHOLDER.encode()}
    assert _import_compat_with(tmp_path, PATCHED, both) == "compiled False"


def test_patched_v06_with_the_installed_placeholder_passes(tmp_path):
    placeholder = {"_C.py": patch_legacy_sources.C_PLACEHOLDER.encode()}
    assert _import_compat_with(tmp_path, PATCHED, placeholder) == "placeholder False"


@pytest.mark.parametrize("c_files", [{}, {"_C.py": b"def deform_conv_forward(): pass\n"}],
                         ids=["no _C", "foreign _C.py"])
def test_v06_without_ops_or_placeholder_is_refused_with_the_fix(tmp_path, c_files):
    out = _import_compat_with(tmp_path, PATCHED, c_files)
    assert out.startswith("ImportError: ")
    assert "_C.py is missing or not LongTailSeg's placeholder" in out
    assert "`python tools/patch_legacy_sources.py`" in out and "make setup" in out


def test_unpatched_v06_is_refused_with_the_fix(tmp_path):
    out = _import_compat_with(tmp_path, "from PIL import Image\ninterp = Image.LINEAR\n")
    assert out.startswith("ImportError:") and "transform.py still uses names" in out
    assert "tools/patch_legacy_sources.py" in out


def test_no_detectron2_says_how_to_install_one(tmp_path):
    out = _import_compat_with(tmp_path)
    assert out.startswith("ImportError: LongTailSeg needs Detectron2, which is not installed")
    assert "make setup" in out


def test_a_folder_left_by_an_uninstall_is_no_detectron2(tmp_path):
    """pip uninstall leaves files it did not install: a folder without __init__.py."""
    leftover = {"_C.py": patch_legacy_sources.C_PLACEHOLDER.encode()}
    out = _import_compat_with(tmp_path, PATCHED, leftover, init=False)
    assert out.startswith("ImportError: LongTailSeg needs Detectron2, which is not installed")
