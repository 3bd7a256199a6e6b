# LongTailSeg: `make demo` and `make test` set up .venv first (Python 3.11, no GPU needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.longtailseg-setup
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
SYNTHETIC := $(DETECTRON2_DATASETS)/synthetic

.PHONY: setup demo demo-methods results-losses results-medoe test data clean-demo

setup: $(SETUP_STAMP)

# torch/torchvision: the registry's CUDA builds, which also run on CPU (no CPU torchvision works);
# Detectron2 v0.6: Python code only, from the registry's sdist (see tools/install_detectron2.sh).
$(SETUP_STAMP): setup.py tools/install_detectron2.sh tools/patch_legacy_sources.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.11.0 torchvision==0.26.0
	bash tools/install_detectron2.sh $(PY)
	$(PY) -m pip install -q -e '.[test]'
	# Again: LongTailSeg's install brings cityscapesscripts, whose evaluation needs it too.
	$(PY) tools/patch_legacy_sources.py
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
	$(PY) tools/plot_results.py $(OUT)/deeplab_v3_plus $(OUT)/blv_deeplab $(OUT)/disalign_deeplab --names CE BLV DisAlign --output $(OUT)/figures

# The loss table: DeepLabV3+ on the synthetic set with each loss (same schedule as
# the CE baseline; LDAM with scale 1 as the classifier is a plain linear one), then one table.
LOSSES := Focal CB CBFocal BMS LDAM PAT
results-losses: data
	test -f $(OUT)/deeplab_v3_plus/model_final.pth || $(PY) tools/train_net.py --config-file configs/synthetic/deeplab_v3_plus.yaml
	test -f $(OUT)/blv_deeplab/model_final.pth || $(PY) tools/train_net.py --config-file configs/synthetic/blv_deeplab.yaml
	for loss in $(LOSSES); do \
	  test -f $(OUT)/loss_$$loss/model_final.pth || $(PY) tools/train_net.py \
	    --config-file configs/synthetic/deeplab_v3_plus.yaml MODEL.LONG_TAIL.LOSS.NAME $$loss \
	    MODEL.LONG_TAIL.LOSS.LDAM_SCALE 1.0 MODEL.LONG_TAIL.LOSS.PAT_CONSTANT 3.0 \
	    OUTPUT_DIR $(OUT)/loss_$$loss || exit 1; \
	done
	$(PY) tools/compare_results.py $(OUT)/deeplab_v3_plus $(addprefix $(OUT)/loss_,Focal CB CBFocal BMS LDAM) \
	  $(OUT)/blv_deeplab $(OUT)/loss_PAT --names CE Focal CB CB-Focal BMS LDAM BLV PAT

# The MEDOE table: CE baseline, MED (stage 1, expert 1), MEDOE (stage 2, MOE), the
# untrained ensembles and the oracle on the stage-1 experts; normal and uniform test settings.
MEDOE_EVAL := $(PY) tools/train_net.py --eval-only --config-file configs/synthetic/medoe_deeplab.yaml \
	MODEL.WEIGHTS $(OUT)/medoe_deeplab/model_final.pth
ENSEMBLES := softmax_threshold argmax_confidence group_average
results-medoe: data
	test -f $(OUT)/deeplab_v3_plus/model_final.pth || $(PY) tools/train_net.py --config-file configs/synthetic/deeplab_v3_plus.yaml
	test -f $(OUT)/medoe_deeplab/model_final.pth || $(PY) tools/train_net.py --config-file configs/synthetic/medoe_deeplab.yaml
	test -f $(OUT)/medoe_deeplab_moe/model_final.pth || $(PY) tools/train_net.py --config-file configs/synthetic/medoe_deeplab_moe.yaml
	$(PY) tools/train_net.py --eval-only --config-file configs/synthetic/deeplab_v3_plus.yaml \
	  MODEL.WEIGHTS $(OUT)/deeplab_v3_plus/model_final.pth TEST.UNIFORM.ENABLED True OUTPUT_DIR $(OUT)/eval_deeplab_v3_plus
	for ensemble in $(ENSEMBLES); do \
	  $(MEDOE_EVAL) MODEL.MEDOE.ENSEMBLE $$ensemble OUTPUT_DIR $(OUT)/eval_medoe_$$ensemble || exit 1; \
	done
	$(MEDOE_EVAL) MODEL.MEDOE.ORACLE True OUTPUT_DIR $(OUT)/eval_medoe_oracle
	$(PY) tools/compare_results.py --uniform $(OUT)/eval_deeplab_v3_plus $(OUT)/medoe_deeplab \
	  $(OUT)/medoe_deeplab_moe $(addprefix $(OUT)/eval_medoe_,oracle $(ENSEMBLES)) \
	  --names baseline MED MEDOE "MEDOE oracle" "softmax 0.3" "argmax conf." "group avg."

test: setup
	$(PY) -m pytest -q tests

# The same suite on Detectron2's main branch built from source with its C++ ops, in its own venv
# (.venv-detectron2-main); DETECTRON2_SOURCE defaults to the snapshot in ../shared/vendor/.
.PHONY: test-detectron2-main
test-detectron2-main:
	bash tools/test_detectron2_main.sh $(DETECTRON2_SOURCE)

clean-demo:
	rm -rf output/synthetic

# Mask R-CNN with the long-tail ROI heads on the synthetic LVIS set: the baseline,
# cosine and BLV (stage 1), DisAlign stage 2 on the baseline and on the cosine model, one table
# (AP / APr / APc / APf of segm and bbox, seconds per training iteration and overhead).
.PHONY: results-lvis
LVIS_RUNS := baseline cosine blv disalign cosine_disalign
results-lvis: data
	for run in $(LVIS_RUNS); do \
	  test -f $(OUT)/mask_rcnn_$$run/model_final.pth || $(PY) tools/train_net.py \
	    --config-file configs/synthetic/mask_rcnn_$$run.yaml || exit 1; \
	done
	$(PY) tools/compare_lvis_results.py $(addprefix $(OUT)/mask_rcnn_,$(LVIS_RUNS)) \
	  --names baseline cosine BLV DisAlign cosine+DisAlign
