#!/usr/bin/env bash
# Run the whole test suite against a complete, current Detectron2 (its main branch, built from
# source with its C++ ops) instead of the Python-only v0.6 that `make setup` installs.
#
#   bash tools/test_detectron2_main.sh [DETECTRON2_SOURCE.tar.gz]      (make test-detectron2-main)
#
# The source defaults to the snapshot in ../shared/vendor/ (a testing-only copy beside this
# repository; it is unpacked into a temporary folder and never into the repository). Everything
# is installed into .venv-detectron2-main, so .venv stays as it is.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
source_tarball="${1:-$(ls "$repo"/../shared/vendor/detectron2-main-*.tar.gz 2>/dev/null | head -1)}"
if [[ -z "$source_tarball" || ! -f "$source_tarball" ]]; then
  echo "error: no Detectron2 source archive; pass one: bash tools/test_detectron2_main.sh detectron2-main.tar.gz" >&2
  exit 2
fi
venv="$repo/.venv-detectron2-main"
py="$venv/bin/python"
test -x "$py" || python3 -m venv "$venv"
"$py" -m pip install -q torch==2.11.0 torchvision==0.26.0 wheel setuptools ninja
if ! "$py" -c "import detectron2._C" 2>/dev/null; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  tar -xzf "$source_tarball" -C "$work"
  src="$(dirname "$(ls -d "$work"/*/setup.py | head -1)")"
  echo "building Detectron2 from $source_tarball (C++ ops for the CPU; a few minutes)"
  "$py" -m pip install -q --no-build-isolation "$src"
fi
# lvis without its dependencies (they would add opencv-python beside opencv-python-headless).
"$py" -m pip install -q --no-deps lvis==0.5.3
"$py" -m pip install -q -e "$repo[test]"
# lvis 0.5.3 and cityscapesscripts still use names today's numpy removed; Detectron2 main has none.
"$py" "$repo/tools/patch_legacy_sources.py"
cd "$repo"
"$py" -c "import detectron2, detectron2._C; print('Detectron2', detectron2.__version__, 'with C++ ops')"
exec "$py" -m pytest -q tests
