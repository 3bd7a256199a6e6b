# LongTailSeg: `make demo` and `make test` set up .venv first (Python 3.11, no GPU needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.longtailseg-setup
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
SYNTHETIC := $(DETECTRON2_DATASETS)/synthetic

.PHONY: setup demo demo-methods results-losses results-medoe test data clean-demo \
	data-ade20k-profile data-lvis-profile results-ade20k-profile results-lvis-profile

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

# Method tables on the sets with the real data sets' class profiles (tools/make_synthetic_data.py
# --profile ade20k / lvis_v1). Every run is trained once per seed in SEEDS, into
# <output>/<run>-seed<n>; a second stage starts from its first stage of the same seed. The compare
# tools get all seed folders with each name repeated once per seed.
SEEDS ?= 1 2 3
TRAIN := $(PY) tools/train_net.py
_run = $(word 1,$(subst :, ,$(1)))
_name = $(word 2,$(subst :, ,$(1)))
# $(call seed_runs,OUT,RUN:NAME list) and $(call seed_names,RUN:NAME list): one entry per seed.
seed_runs = $(foreach p,$(2),$(foreach s,$(SEEDS),$(1)/$(call _run,$(p))-seed$(s)))
seed_names = $(foreach p,$(1),$(foreach s,$(SEEDS),$(call _name,$(p))))

ADE_PROFILE := $(DETECTRON2_DATASETS)/synthetic_ade20k_profile
ADE_PROFILE_CFG := configs/synthetic/ade20k_profile
ADE_PROFILE_OUT := output/synthetic_ade20k_profile
ADE_PROFILE_STAGE1 := deeplab_v3_plus blv_deeplab pat_deeplab medoe_deeplab
ADE_PROFILE_TABLE := deeplab_v3_plus:CE blv_deeplab:BLV disalign_deeplab:DisAlign pat_deeplab:PAT \
	medoe_deeplab_moe:MEDOE

data-ade20k-profile: setup
	test -f $(ADE_PROFILE)/synthetic_classes.json || $(PY) tools/make_synthetic_data.py --root $(ADE_PROFILE) --profile ade20k

# CE, BLV, DisAlign (stage 2 on CE), PAT and MEDOE (MOE stage 2 on MED) on the ADE20K profile:
# head / body / tail mIoU and mACC (DisAlign's 20 / 55 / 75 groups).
results-ade20k-profile: data-ade20k-profile
	for seed in $(SEEDS); do \
	  for run in $(ADE_PROFILE_STAGE1); do \
	    test -f $(ADE_PROFILE_OUT)/$$run-seed$$seed/model_final.pth || $(TRAIN) --config-file \
	      $(ADE_PROFILE_CFG)/$$run.yaml SEED $$seed OUTPUT_DIR $(ADE_PROFILE_OUT)/$$run-seed$$seed || exit 1; \
	  done; \
	  for stage2 in disalign_deeplab:deeplab_v3_plus medoe_deeplab_moe:medoe_deeplab; do \
	    run=$${stage2%%:*}; stage1=$${stage2##*:}; \
	    test -f $(ADE_PROFILE_OUT)/$$run-seed$$seed/model_final.pth || $(TRAIN) --config-file \
	      $(ADE_PROFILE_CFG)/$$run.yaml SEED $$seed MODEL.WEIGHTS $(ADE_PROFILE_OUT)/$$stage1-seed$$seed/model_final.pth \
	      OUTPUT_DIR $(ADE_PROFILE_OUT)/$$run-seed$$seed || exit 1; \
	  done; \
	done
	$(PY) tools/compare_results.py $(call seed_runs,$(ADE_PROFILE_OUT),$(ADE_PROFILE_TABLE)) \
	  --names $(call seed_names,$(ADE_PROFILE_TABLE))

LVIS_PROFILE := $(DETECTRON2_DATASETS)/synthetic_lvis_v1_profile
LVIS_PROFILE_CFG := configs/synthetic/lvis_v1_profile
LVIS_PROFILE_OUT := output/synthetic_lvis_v1_profile
LVIS_PROFILE_TABLE := mask_rcnn_baseline:baseline mask_rcnn_cosine:cosine mask_rcnn_disalign:DisAlign

data-lvis-profile: setup
	test -f $(LVIS_PROFILE)/synthetic_classes.json || $(PY) tools/make_synthetic_data.py --root $(LVIS_PROFILE) --profile lvis_v1

# Mask R-CNN baseline, cosine classifier and DisAlign (stage 2 on the baseline) on the LVIS v1
# profile: AP, APr, APc, APf of segm and bbox.
results-lvis-profile: data-lvis-profile
	for seed in $(SEEDS); do \
	  for run in mask_rcnn_baseline mask_rcnn_cosine; do \
	    test -f $(LVIS_PROFILE_OUT)/$$run-seed$$seed/model_final.pth || $(TRAIN) --config-file \
	      $(LVIS_PROFILE_CFG)/$$run.yaml SEED $$seed OUTPUT_DIR $(LVIS_PROFILE_OUT)/$$run-seed$$seed || exit 1; \
	  done; \
	  test -f $(LVIS_PROFILE_OUT)/mask_rcnn_disalign-seed$$seed/model_final.pth || $(TRAIN) --config-file \
	    $(LVIS_PROFILE_CFG)/mask_rcnn_disalign.yaml SEED $$seed \
	    MODEL.WEIGHTS $(LVIS_PROFILE_OUT)/mask_rcnn_baseline-seed$$seed/model_final.pth \
	    OUTPUT_DIR $(LVIS_PROFILE_OUT)/mask_rcnn_disalign-seed$$seed || exit 1; \
	done
	$(PY) tools/compare_lvis_results.py $(call seed_runs,$(LVIS_PROFILE_OUT),$(LVIS_PROFILE_TABLE)) \
	  --names $(call seed_names,$(LVIS_PROFILE_TABLE))
