#!/usr/bin/env bash
# Installs Detectron2 v0.6's Python code from the registry's `pb1-detectron2==0.6` source
# distribution, without its C++ extension (the sdist lacks detectron2/layers/csrc/, so a plain
# `pip install pb1-detectron2` fails compiling vision.cpp), and `lvis==0.5.3`; then rewrites the
# numpy / Pillow names both still use and today's numpy and Pillow removed, and writes
# detectron2/_C.py, a placeholder for the missing compiled `detectron2._C` whose operators raise a
# one-line error (tools/patch_legacy_sources.py; a compiled _C is left alone). So Detectron2 and
# its own tools work by themselves, without importing LongTailSeg (whose _compat only checks).
# Nothing of Detectron2 is kept in this repository: the sdist is downloaded into a temporary
# folder, built there and deleted.
#
# Usage: tools/install_detectron2.sh PYTHON   (the interpreter of the target environment,
#        which must already have torch, for the sdist's setup.py imports it)
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  echo "Example: bash tools/install_detectron2.sh .venv/bin/python"
  exit 0
fi
py="${1:?usage: $0 PYTHON}"
here="$(cd "$(dirname "$0")" && pwd)"
# lvis without its dependencies: it would pull opencv-python next to our headless OpenCV; the
# evaluator needs only numpy and pycocotools, which LongTailSeg's own install brings.
"$py" -m pip show -q lvis >/dev/null 2>&1 || "$py" -m pip install -q --no-deps lvis==0.5.3
# Checked with pip, not by importing: detectron2's runtime dependencies (fvcore...) come with
# LongTailSeg's own install, after this script.
if "$py" -m pip show -q pb1-detectron2 >/dev/null 2>&1; then
  echo "pb1-detectron2 already installed"
  # Still patched: an environment set up before the _C placeholder existed gets it now.
  "$py" "$here/patch_legacy_sources.py"
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# setup.py imports torch and needs `wheel` to report its metadata, hence no build isolation.
# pip >= 24.1 refuses this sdist's metadata (its "all" extra names a URL dependency), so the
# download uses the pip that Python 3.11 ships (23.x); newer pips stop here with that message.
"$py" -m pip install -q wheel
"$py" -m pip download -q --no-deps --no-binary :all: --no-build-isolation \
  pb1-detectron2==0.6 -d "$work"
tar -xzf "$work"/pb1-detectron2-0.6.tar.gz -C "$work"
src="$work/pb1-detectron2-0.6"
# Build the pure-Python package only: drop the C++ extension from this temporary copy.
sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
grep -q 'ext_modules=\[\],' "$src/setup.py" || { echo "could not disable the C++ extension in $src/setup.py" >&2; exit 1; }
# --no-deps: its metadata pins black==21.4b2, fvcore<0.1.6, iopath<0.1.10; our setup.py
# declares the runtime dependencies instead.
"$py" -m pip install -q --no-deps --no-build-isolation "$src"
"$py" "$here/patch_legacy_sources.py"
"$py" -m pip show -q pb1-detectron2 \
  && echo "installed pb1-detectron2 0.6 (Python code only, a placeholder for its C++ ops)"
