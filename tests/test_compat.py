"""The compatibility module patches Detectron2 v0.6 here and leaves a modern install alone."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import longtailseg._compat as compat

COMPAT_FILE = compat.__file__


def test_v06_here_is_patched_and_usable():
    assert "detectron2._C" in compat.APPLIED
    assert "PIL.Image.LINEAR" in compat.APPLIED
    assert np.float is float and np.int is int
    from PIL import Image

    assert Image.LINEAR == Image.BILINEAR
    # the modules that import _C or use removed names now import
    import detectron2.evaluation  # noqa: F401
    import detectron2.layers.deform_conv  # noqa: F401
    from detectron2 import _C

    with pytest.raises(RuntimeError, match="built without its C\\+\\+ ops: deformable convolution"):
        _C.deform_conv_forward


def _run_compat_in(tmp_path, transform_source, with_compiled_ops):
    """Import the compat module in a fresh interpreter that sees a fake detectron2 package."""
    pkg = tmp_path / "site" / "detectron2"
    (pkg / "data" / "transforms").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "transforms" / "transform.py").write_text(transform_source)
    if with_compiled_ops:
        (pkg / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    lvis_pkg = tmp_path / "site" / "lvis"
    lvis_pkg.mkdir()
    (lvis_pkg / "__init__.py").write_text("")
    (lvis_pkg / "eval.py").write_text("x = 1.0\n")  # a fixed lvis
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("compat_under_test", {COMPAT_FILE!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        import numpy as np
        print(module.APPLIED, "int" in vars(np), "detectron2._C" in sys.modules)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_modern_complete_detectron2_is_left_alone(tmp_path):
    modern = "from PIL import Image\ninterp = Image.BILINEAR\n"
    assert _run_compat_in(tmp_path, modern, with_compiled_ops=True) == "[] False False"


def test_old_detectron2_without_ops_gets_every_patch(tmp_path):
    old = "from PIL import Image\ninterp = Image.LINEAR\n"
    applied = _run_compat_in(tmp_path, old, with_compiled_ops=False)
    assert "'numpy.float'" in applied and "'detectron2._C'" in applied and applied.endswith("True True")
