"""Test-only access to Detectron2 main's source, the snapshot in ../shared/vendor/ beside the
checkout (never part of the package): functions are read from the archive's files and compiled
here, so they can be compared with LongTailSeg's on Detectron2 v0.6 too. Tests skip when the
archive is absent."""
import ast
import glob
import os
import tarfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def archive():
    """Path of the vendored Detectron2 main source archive, or skip the test."""
    found = sorted(glob.glob(os.path.join(REPO, "..", "shared", "vendor", "detectron2-main-*.tar.gz")))
    if not found:
        pytest.skip("Detectron2 main's source (../shared/vendor/detectron2-main-*.tar.gz) is absent")
    return found[0]


def source(path):
    """Text of ``path`` (e.g. detectron2/config/defaults.py) inside the archive's package."""
    with tarfile.open(archive()) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/" + path))
        return tar.extractfile(member).read().decode("utf-8")


def functions(path, names, namespace, in_class=None):
    """The functions ``names`` defined at the top of ``path`` (or in its class ``in_class``),
    compiled with the globals ``namespace``; returns {name: function}."""
    tree = ast.parse(source(path))
    body = tree.body
    if in_class is not None:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == in_class).body
    defs = [n for n in body if isinstance(n, ast.FunctionDef) and n.name in names]
    for node in defs:
        node.decorator_list = []
    assert {n.name for n in defs} == set(names), f"{names} not all in {path}"
    module = ast.Module(body=defs, type_ignores=[])
    scope = dict(namespace)
    exec(compile(module, f"detectron2-main/{path}", "exec"), scope)
    return {name: scope[name] for name in names}
