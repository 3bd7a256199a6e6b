# LongTailSeg: `make demo` and `make test` set up .venv first (Python 3.11, no GPU needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.longtailseg-setup
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
SYNTHETIC := $(DETECTRON2_DATASETS)/synthetic

.PHONY: setup demo demo-methods test data clean-demo

setup: $(SETUP_STAMP)

# torch/torchvision: the registry's CUDA builds, which also run on CPU (no CPU torchvision works);
# Detectron2 v0.6: Python code only, from the registry's sdist (see tools/install_detectron2.sh).
$(SETUP_STAMP): setup.py tools/install_detectron2.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.11.0 torchvision==0.26.0
	bash tools/install_detectron2.sh $(PY)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

data: setup
	test -f $(SYNTHETIC)/synthetic_classes.json || $(PY) tools/make_synthetic_data.py --root $(SYNTHETIC)

demo: data
	$(PY) tools/train_net.py --config-file configs/synthetic/deeplab_v3_plus.yaml

# Baseline, BLV and DisAlign (stage 2 on the baseline) side by side on the synthetic set.
OUT := output/synthetic
demo-methods: data
	test -f $(OUT)/deeplab_v3_plus/model_final.pth || $(PY) tools/train_net.py --config-file configs/synthetic/deeplab_v3_plus.yaml
	$(PY) tools/train_net.py --config-file configs/synthetic/blv_deeplab.yaml
	$(PY) tools/train_net.py --config-file configs/synthetic/disalign_deeplab.yaml
	$(PY) tools/compare_results.py $(OUT)/deeplab_v3_plus $(OUT)/blv_deeplab $(OUT)/disalign_deeplab --names CE BLV DisAlign

test: setup
	$(PY) -m pytest -q tests

clean-demo:
	rm -rf output/synthetic
