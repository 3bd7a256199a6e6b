"""The package map of ARCHITECTURE.md, enforced: every import inside ``longtailseg`` goes down the
layers (or stays in its own package), never up or sideways between modeling and evaluation."""
import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "projects", "LongTailSeg", "longtailseg")
# ARCHITECTURE.md: longtail/ < config < data/ < modeling/, evaluation/ < engine/ < model_zoo/,
# with the stdlib-only modules below everything.
LAYERS = {
    "_compat": 0, "errors": 0, "io": 0, "safe_files": 0,
    "longtail": 1,
    "config": 2,
    "data": 3,
    "modeling": 4, "evaluation": 4,
    "engine": 5,
    "model_zoo": 6,
}
# Below in the layers but still not imported: a model is built from the config alone (the engine
# resolves what it needs from the data first); modeling and evaluation do not know each other.
FORBIDDEN = {("modeling", "data"), ("modeling", "evaluation"), ("evaluation", "modeling")}


def top_package(module):
    """``longtailseg.data.build`` -> ``data``; the package's own ``__init__`` -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def package_modules(package):
    for folder, _, files in os.walk(package):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, os.path.dirname(package))[:-3].replace(os.sep, ".")
                yield path, relative.removesuffix(".__init__")


def imported_modules(path, module):
    """Absolute names of the ``longtailseg`` modules ``path`` imports (relative imports resolved),
    with the line of each import."""
    is_package = path.endswith("__init__.py")
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # ``from .. import data`` imports the subpackage
                yield f"{target}.{alias.name}", node.lineno


def forbidden_arrows(package=PACKAGE):
    arrows = []
    for path, module in package_modules(package):
        source = top_package(module)
        if source is None:
            continue  # longtailseg/__init__.py imports every layer to register them
        for target_module, line in imported_modules(path, module):
            if not target_module.startswith("longtailseg."):
                continue
            target = top_package(target_module)
            if target is None or target == source or target not in LAYERS:
                continue
            if LAYERS[target] > LAYERS[source] or (source, target) in FORBIDDEN:
                arrows.append(f"{module} (line {line}) imports {target_module}: "
                              f"{source} may not import {target}")
    return sorted(set(arrows))


def test_every_top_level_module_has_a_layer():
    names = {os.path.splitext(n)[0] for n in os.listdir(PACKAGE)
             if not n.startswith(("__", ".")) and (n.endswith(".py") or os.path.isdir(os.path.join(PACKAGE, n)))}
    assert names - {"__pycache__"} <= set(LAYERS), "give each new module a layer in LAYERS and ARCHITECTURE.md"


def test_no_import_goes_up_or_sideways():
    assert forbidden_arrows() == []


@pytest.mark.parametrize("source, target, statement", [
    ("modeling", "data", "from ..data.class_counting import compute_class_stats"),
    ("modeling", "evaluation", "from .. import evaluation"),
    ("longtail", "config", "from ..config import class_stats_from_config"),
    ("engine", "model_zoo", "from ..model_zoo import get"),
])
def test_the_check_finds_a_forbidden_arrow(tmp_path, source, target, statement):
    """The check is not vacuous: one forbidden import in a copy of the package is reported."""
    import shutil

    copy = tmp_path / "longtailseg"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    module = copy / source / "__init__.py"
    module.write_text(module.read_text() + f"\n{statement}\n")
    arrows = forbidden_arrows(str(copy))
    assert len(arrows) >= 1 and all(f"{source} may not import {target}" in a for a in arrows), arrows
