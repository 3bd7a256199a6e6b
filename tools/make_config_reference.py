#!/usr/bin/env python
"""Write docs/CONFIG_REFERENCE.md from the config defaults (longtailseg/config/defaults.py).

Every key that ``add_longtailseg_config`` sets, with its default as written there and the
comment block right above it; ``tests/test_config_reference.py`` fails when the file is not
what this tool writes, so the reference cannot fall behind the code.

    python tools/make_config_reference.py            # rewrite docs/CONFIG_REFERENCE.md
    python tools/make_config_reference.py --check    # exit 1 if it is out of date
"""
import argparse
import ast
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = os.path.join(REPO, "projects", "LongTailSeg", "longtailseg", "config", "defaults.py")
REFERENCE = os.path.join(REPO, "docs", "CONFIG_REFERENCE.md")

HEADER = """# Config reference

Every key LongTailSeg adds to Detectron2's config (`add_longtailseg_config(cfg)`), with its default
and what it does. Generated from `projects/LongTailSeg/longtailseg/config/defaults.py` by
`python tools/make_config_reference.py`; do not edit by hand. Detectron2's own keys are documented
in its `detectron2/config/defaults.py`; `add_longtailseg_config` also adds Detectron2 DeepLab's
keys (`add_deeplab_config`: `SOLVER.POLY_LR_*`, `MODEL.SEM_SEG_HEAD.ASPP_*`, ...).

Give any Detectron2 tool these keys by calling `add_longtailseg_config(cfg)` on its config before
merging a LongTailSeg config file.
"""


def _key(target):
    """``cfg.MODEL.LONG_TAIL.LOSS`` -> ``MODEL.LONG_TAIL.LOSS`` (None for other targets)."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name) and target.id == "cfg" and parts:
        return ".".join(reversed(parts))
    return None


def _comment_above(lines, lineno):
    """The contiguous ``#`` lines right above line ``lineno`` (1-based), joined."""
    comment = []
    i = lineno - 2
    while i >= 0 and lines[i].strip().startswith("#"):
        comment.append(lines[i].strip().lstrip("#").strip())
        i -= 1
    text = " ".join(reversed(comment))
    return text.removeprefix("---- ").removesuffix(" ----")


def config_entries(path=None):
    """(key, default source or None for a section, comment) for each assignment, in file order."""
    source = open(path or DEFAULTS, encoding="utf-8").read()
    lines = source.splitlines()
    function = next(node for node in ast.parse(source).body
                    if isinstance(node, ast.FunctionDef) and node.name == "add_longtailseg_config")
    entries = []
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            key = _key(node.targets[0])
            if key is None:
                continue
            value = ast.get_source_segment(source, node.value)
            section = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "CN"
            entries.append((node.lineno, key, None if section else value, _comment_above(lines, node.lineno)))
    return [entry[1:] for entry in sorted(entries)]


def _cell(text):
    return text.replace("|", "\\|")


def render(entries):
    out = [HEADER]
    table_open = False
    previous = None  # the key whose comment a key without its own shares (one block above both)
    for key, default, comment in entries:
        if default is None:
            out.append(f"\n## `{key}`\n")
            if comment:
                out.append(f"{comment}\n")
            table_open = False
            continue
        if not table_open:
            out.append("| key | default | meaning |\n|---|---|---|")
            table_open = True
        if comment:
            previous = key
        meaning = _cell(comment) if comment else f"see `{previous}`" if previous else "—"
        out.append(f"| `{key}` | `{_cell(default)}` | {meaning} |")
    return "\n".join(out).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the reference is out of date")
    args = parser.parse_args(argv)
    text = render(config_entries())
    current = open(REFERENCE, encoding="utf-8").read() if os.path.isfile(REFERENCE) else ""
    if args.check:
        if current != text:
            print(f"error: {os.path.relpath(REFERENCE, REPO)} is out of date; run "
                  "`python tools/make_config_reference.py`", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(REFERENCE), exist_ok=True)
    with open(REFERENCE, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {os.path.relpath(REFERENCE, REPO)} ({sum(d is not None for _, d, _ in config_entries())} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
