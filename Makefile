# LongTailSeg: `make demo` and `make test` set up .venv first (Python 3.11, no GPU needed).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.longtailseg-setup
export DETECTRON2_DATASETS ?= $(CURDIR)/datasets
SYNTHETIC := $(DETECTRON2_DATASETS)/synthetic

.PHONY: setup demo demo-methods results-losses results-medoe test data clean-demo \
	data-ade20k-profile data-lvis-profile results-ade20k-profile results-lvis-profile data-pat

setup: $(SETUP_STAMP)

# torch/torchvision: the registry's CUDA builds, which also run on CPU (no CPU torchvision works);
# Detectron2 v0.6: Python code only, from the registry's sdist, with an installed placeholder for
# its C++ ops (tools/install_detectron2.sh, tools/patch_legacy_sources.py). A change to any file
# the recipe runs sets the environment up again (an older .venv gets the placeholder that way).
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

# PAT's data sets in their published formats, synthetic (datasets/README.md): Oxford-IIIT Pet's
# trimaps + list files and NYUv2's nyu_depth_v2_labeled.mat, each prepared by its script as the
# real one is (labels, and PAT's seeded 0.8 / 0.1 / 0.1 split file, written last: it marks a set
# complete). Registered as synthetic_oxford_pet_pat_* and synthetic_nyuv2_{13,40}_pat_*.
PAT_DATA_IMAGES ?= 200
PAT_DATA_SIZE ?= 64
data-pat: setup
	test -f $(SYNTHETIC)/oxford_pet/pat_split_seed0.json || { $(PY) tools/make_synthetic_data.py \
	  --root $(SYNTHETIC)/oxford_pet --format oxford_pet --num-images $(PAT_DATA_IMAGES) --size $(PAT_DATA_SIZE) \
	  --force && $(PY) datasets/prepare_oxford_pet.py --root $(SYNTHETIC); }
	test -f $(SYNTHETIC)/nyuv2/pat_split_seed0.json || { $(PY) tools/make_synthetic_data.py \
	  --root $(SYNTHETIC)/nyuv2 --format nyuv2 --num-images $(PAT_DATA_IMAGES) --size $(PAT_DATA_SIZE) \
	  --force && $(PY) datasets/prepare_nyuv2.py --root $(SYNTHETIC); }

demo: data
	$(PY) tools/train_net.py --config-file configs/synthetic/deeplab_v3_plus.yaml

# Every results table is the mean ± std over SEEDS (training SEED, same data): one run is not
# evidence. Run r of seed n trains into $(OUT)/r-seedn; compare_results.py and
# compare_lvis_results.py average the runs that share a --names entry.
OUT := output/synthetic
SEEDS ?= 1 2 3
# STAGE1_ITERS, when set, shortens the tables' stage-1 DeepLab runs (the configs train 2000
# iterations); stage 2 keeps its config's schedule. Check that the ordering of the methods does
# not change before relying on a shorter schedule.
STAGE1_ITERS ?=
SHORT := $(if $(STAGE1_ITERS),SOLVER.MAX_ITER $(STAGE1_ITERS))
TRAIN := $(PY) tools/train_net.py --config-file
# $(call train_seeds,CONFIG,RUN[,OPTS]): train CONFIG with each seed into RUN-seed<n> unless
# that run finished; OPTS may name the seed's stage-1 run as $$seed.
define train_seeds
for seed in $(SEEDS); do \
  test -f $(2)-seed$$seed/model_final.pth || $(TRAIN) $(1) \
    SEED $$seed OUTPUT_DIR $(2)-seed$$seed $(3) || exit 1; \
done;
endef
# $(call eval_seeds,CONFIG,RUN,TRAINED_RUN[,OPTS]): evaluate TRAINED_RUN-seed<n>'s final weights with
# CONFIG into RUN-seed<n>, for each seed.
define eval_seeds
for seed in $(SEEDS); do \
  $(TRAIN) $(1) --eval-only SEED $$seed OUTPUT_DIR $(2)-seed$$seed \
    MODEL.WEIGHTS $(3)-seed$$seed/model_final.pth $(4) || exit 1; \
done;
endef
# $(call seed_runs,RUN ...) and $(call seed_names,NAME ...): the runs' folders of every seed, and
# each name once per seed, in the same order.
seed_runs = $(foreach run,$(1),$(foreach seed,$(SEEDS),$(run)-seed$(seed)))
seed_names = $(foreach name,$(1),$(foreach seed,$(SEEDS),$(name)))

# Baseline, BLV and DisAlign (stage 2 on the baseline of the same seed) side by side.
demo-methods: data
	$(call train_seeds,configs/synthetic/deeplab_v3_plus.yaml,$(OUT)/deeplab_v3_plus,$(SHORT))
	$(call train_seeds,configs/synthetic/blv_deeplab.yaml,$(OUT)/blv_deeplab,$(SHORT))
	$(call train_seeds,configs/synthetic/disalign_deeplab.yaml,$(OUT)/disalign_deeplab,\
	  MODEL.WEIGHTS $(OUT)/deeplab_v3_plus-seed$$seed/model_final.pth)
	$(PY) tools/compare_results.py $(call seed_runs,$(addprefix $(OUT)/,deeplab_v3_plus blv_deeplab disalign_deeplab)) \
	  --names $(call seed_names,CE BLV DisAlign)
	$(PY) tools/plot_results.py $(addsuffix -seed$(firstword $(SEEDS)),$(addprefix $(OUT)/,deeplab_v3_plus blv_deeplab disalign_deeplab)) \
	  --names CE BLV DisAlign --output $(OUT)/figures

# The loss table: DeepLabV3+ on the synthetic set with each loss (same schedule as
# the CE baseline; LDAM with scale 1 as the classifier is a plain linear one), then one table.
LOSSES := Focal CB CBFocal BMS LDAM PAT
results-losses: data
	$(call train_seeds,configs/synthetic/deeplab_v3_plus.yaml,$(OUT)/deeplab_v3_plus,$(SHORT))
	$(call train_seeds,configs/synthetic/blv_deeplab.yaml,$(OUT)/blv_deeplab,$(SHORT))
	$(foreach loss,$(LOSSES),$(call train_seeds,configs/synthetic/deeplab_v3_plus.yaml,$(OUT)/loss_$(loss),\
	  $(SHORT) MODEL.LONG_TAIL.LOSS.NAME $(loss) MODEL.LONG_TAIL.LOSS.LDAM_SCALE 1.0))
	$(PY) tools/compare_results.py $(call seed_runs,$(addprefix $(OUT)/,deeplab_v3_plus \
	  $(addprefix loss_,Focal CB CBFocal BMS LDAM) blv_deeplab loss_PAT)) \
	  --names $(call seed_names,CE Focal CB CB-Focal BMS LDAM BLV PAT)

# The MEDOE table: CE baseline, MED (stage 1, expert 1), MEDOE (stage 2, MOE), the
# untrained ensembles and the oracle on the stage-1 experts of the same seed; normal and uniform
# test settings.
ENSEMBLES := softmax_threshold argmax_confidence group_average
results-medoe: data
	$(call train_seeds,configs/synthetic/deeplab_v3_plus.yaml,$(OUT)/deeplab_v3_plus,$(SHORT))
	$(call train_seeds,configs/synthetic/medoe_deeplab.yaml,$(OUT)/medoe_deeplab,$(SHORT))
	$(call train_seeds,configs/synthetic/medoe_deeplab_moe.yaml,$(OUT)/medoe_deeplab_moe,\
	  MODEL.WEIGHTS $(OUT)/medoe_deeplab-seed$$seed/model_final.pth)
	$(call eval_seeds,configs/synthetic/deeplab_v3_plus.yaml,$(OUT)/eval_deeplab_v3_plus,$(OUT)/deeplab_v3_plus,\
	  TEST.UNIFORM.ENABLED True)
	$(foreach ensemble,$(ENSEMBLES),\
	  $(call eval_seeds,configs/synthetic/medoe_deeplab.yaml,$(OUT)/eval_medoe_$(ensemble),$(OUT)/medoe_deeplab,MODEL.MEDOE.ENSEMBLE $(ensemble)))
	$(call eval_seeds,configs/synthetic/medoe_deeplab.yaml,$(OUT)/eval_medoe_oracle,$(OUT)/medoe_deeplab,MODEL.MEDOE.ORACLE True)
	$(PY) tools/compare_results.py --uniform $(call seed_runs,$(addprefix $(OUT)/,eval_deeplab_v3_plus medoe_deeplab \
	  medoe_deeplab_moe $(addprefix eval_medoe_,oracle $(ENSEMBLES)))) \
	  --names $(call seed_names,baseline MED MEDOE MEDOE-oracle softmax-0.3 argmax-conf. group-avg.)

test: setup
	$(PY) -m pytest -q tests

# The same suite on Detectron2's main branch built from source with its C++ ops, in its own venv
# (.venv-detectron2-main); DETECTRON2_SOURCE defaults to the snapshot in ../shared/vendor/.
.PHONY: test-detectron2-main
test-detectron2-main:
	bash tools/test_detectron2_main.sh $(DETECTRON2_SOURCE)

# On a CUDA machine: PERFORMANCE.md's tables at their sizes, every method 200 iterations at 512 px
# with and without AMP, and a 2-GPU launch, into one JSON (PERFORMANCE.md, "The GPU check").
# Without CUDA it runs what the CPU can and says what it skipped.
.PHONY: gpu-check
GPU_CHECK_JSON ?= gpu_check.json
gpu-check: setup
	$(PY) tools/gpu_check.py --output $(GPU_CHECK_JSON)

clean-demo:
	rm -rf output/synthetic

# Mask R-CNN with the long-tail ROI heads on the synthetic LVIS set: the baseline (instance-
# balanced, DisAlign's stage 1), cosine, BLV and EQLv2 (stage 1), DisAlign stage 2 on the
# baseline and on the cosine model,
# NorCal (post-hoc, on the baseline's weights), one table (AP / APr / APc / APf of segm and bbox,
# seconds per training iteration and overhead; NorCal has no training time).
.PHONY: results-lvis
LVIS_RUNS := baseline cosine blv eqlv2 disalign cosine_disalign norcal
results-lvis: data
	$(foreach run,baseline cosine blv eqlv2,$(call train_seeds,configs/synthetic/mask_rcnn_$(run).yaml,$(OUT)/mask_rcnn_$(run)))
	$(call train_seeds,configs/synthetic/mask_rcnn_disalign.yaml,$(OUT)/mask_rcnn_disalign,\
	  MODEL.WEIGHTS $(OUT)/mask_rcnn_baseline-seed$$seed/model_final.pth)
	$(call train_seeds,configs/synthetic/mask_rcnn_cosine_disalign.yaml,$(OUT)/mask_rcnn_cosine_disalign,\
	  MODEL.WEIGHTS $(OUT)/mask_rcnn_cosine-seed$$seed/model_final.pth)
	$(call eval_seeds,configs/synthetic/mask_rcnn_norcal.yaml,$(OUT)/mask_rcnn_norcal,$(OUT)/mask_rcnn_baseline)
	$(PY) tools/compare_lvis_results.py $(call seed_runs,$(addprefix $(OUT)/mask_rcnn_,$(LVIS_RUNS))) \
	  --names $(call seed_names,baseline cosine BLV EQLv2 DisAlign cosine+DisAlign NorCal)

# Method tables on the sets with the real data sets' class profiles (tools/make_synthetic_data.py
# --profile ade20k / lvis_v1), over SEEDS like the tables above.
ADE_PROFILE := $(DETECTRON2_DATASETS)/synthetic_ade20k_profile
ADE_PROFILE_CFG := configs/synthetic/ade20k_profile
ADE_PROFILE_OUT := output/synthetic_ade20k_profile

data-ade20k-profile: setup
	test -f $(ADE_PROFILE)/synthetic_classes.json || $(PY) tools/make_synthetic_data.py --root $(ADE_PROFILE) --profile ade20k

# CE, BLV, DisAlign (stage 2 on CE), PAT and MEDOE (MOE stage 2 on MED) on the ADE20K profile:
# head / body / tail mIoU and mACC (DisAlign's 20 / 55 / 75 groups).
results-ade20k-profile: data-ade20k-profile
	$(foreach run,deeplab_v3_plus blv_deeplab pat_deeplab medoe_deeplab,\
	  $(call train_seeds,$(ADE_PROFILE_CFG)/$(run).yaml,$(ADE_PROFILE_OUT)/$(run)))
	$(call train_seeds,$(ADE_PROFILE_CFG)/disalign_deeplab.yaml,$(ADE_PROFILE_OUT)/disalign_deeplab,\
	  MODEL.WEIGHTS $(ADE_PROFILE_OUT)/deeplab_v3_plus-seed$$seed/model_final.pth)
	$(call train_seeds,$(ADE_PROFILE_CFG)/medoe_deeplab_moe.yaml,$(ADE_PROFILE_OUT)/medoe_deeplab_moe,\
	  MODEL.WEIGHTS $(ADE_PROFILE_OUT)/medoe_deeplab-seed$$seed/model_final.pth)
	$(PY) tools/compare_results.py $(call seed_runs,$(addprefix $(ADE_PROFILE_OUT)/,\
	  deeplab_v3_plus blv_deeplab disalign_deeplab pat_deeplab medoe_deeplab_moe)) \
	  --names $(call seed_names,CE BLV DisAlign PAT MEDOE)

LVIS_PROFILE := $(DETECTRON2_DATASETS)/synthetic_lvis_v1_profile
LVIS_PROFILE_CFG := configs/synthetic/lvis_v1_profile
LVIS_PROFILE_OUT := output/synthetic_lvis_v1_profile

data-lvis-profile: setup
	test -f $(LVIS_PROFILE)/synthetic_classes.json || $(PY) tools/make_synthetic_data.py --root $(LVIS_PROFILE) --profile lvis_v1

# Mask R-CNN baseline, cosine classifier, EQLv2, DisAlign (stage 2 on the baseline) and NorCal
# (post-hoc, on the baseline's weights) on the LVIS v1 profile: AP, APr, APc, APf of segm and bbox.
results-lvis-profile: data-lvis-profile
	$(foreach run,mask_rcnn_baseline mask_rcnn_cosine mask_rcnn_eqlv2,$(call train_seeds,$(LVIS_PROFILE_CFG)/$(run).yaml,$(LVIS_PROFILE_OUT)/$(run)))
	$(call train_seeds,$(LVIS_PROFILE_CFG)/mask_rcnn_disalign.yaml,$(LVIS_PROFILE_OUT)/mask_rcnn_disalign,\
	  MODEL.WEIGHTS $(LVIS_PROFILE_OUT)/mask_rcnn_baseline-seed$$seed/model_final.pth)
	$(call eval_seeds,$(LVIS_PROFILE_CFG)/mask_rcnn_norcal.yaml,$(LVIS_PROFILE_OUT)/mask_rcnn_norcal,$(LVIS_PROFILE_OUT)/mask_rcnn_baseline)
	$(PY) tools/compare_lvis_results.py $(call seed_runs,$(addprefix $(LVIS_PROFILE_OUT)/,\
	  mask_rcnn_baseline mask_rcnn_cosine mask_rcnn_eqlv2 mask_rcnn_disalign mask_rcnn_norcal)) \
	  --names $(call seed_names,baseline cosine EQLv2 DisAlign NorCal)

# PAT's tables (its Tables 1-2: every loss it compares) with U-Net and SegNet on the synthetic
# sets in Oxford-IIIT Pet's and NYUv2's published formats (`make data-pat`: synthetic_oxford_pet_pat_*,
# synthetic_nyuv2_13_pat_*; PAT's seeded split, evaluated on its test part), over SEEDS, one table
# per set and architecture: mIoU, pixel accuracy (pACC), Dice error (DiceErr) and the groups.
# LDAM with scale 1 as in results-losses (the classifier is a plain linear one).
.PHONY: results-pat
PAT_CFG := configs/synthetic/pat_protocol
PAT_OUT := output/synthetic_pat
PAT_TABLE_LOSSES := Focal CB CBFocal BMS LDAM PAT
PAT_SETS := oxford_pet nyuv2
PAT_ARCHS := unet segnet
# $(call pat_runs,ARCH_SET): the table's runs, CE ... PAT, in PAT's row order.
pat_runs = $(addprefix $(PAT_OUT)/$(1)_,CE Focal CB CBFocal BMS LDAM BLV PAT)
define pat_table
$(call train_seeds,$(PAT_CFG)/$(1).yaml,$(PAT_OUT)/$(1)_CE,$(SHORT))
$(call train_seeds,$(PAT_CFG)/$(1).yaml,$(PAT_OUT)/$(1)_BLV,$(SHORT) MODEL.LONG_TAIL.BLV.ENABLED True)
$(foreach loss,$(PAT_TABLE_LOSSES),$(call train_seeds,$(PAT_CFG)/$(1).yaml,$(PAT_OUT)/$(1)_$(loss),\
  $(SHORT) MODEL.LONG_TAIL.LOSS.NAME $(loss) MODEL.LONG_TAIL.LOSS.LDAM_SCALE 1.0))
$(PY) tools/compare_results.py $(call seed_runs,$(call pat_runs,$(1))) \
  --names $(call seed_names,CE Focal CB CB-Focal BMS LDAM BLV PAT)
endef
define newline


endef
# PAT_TABLES: which of the four tables (ARCH_SET names) to train, e.g. PAT_TABLES=segnet_nyuv2.
# A finished run (its model_final.pth) is not trained again: give a shortened schedule its own
# folder, e.g. make results-pat STAGE1_ITERS=200 PAT_OUT=output/synthetic_pat_200it (RESULTS.md).
PAT_TABLES ?= unet_oxford_pet segnet_oxford_pet unet_nyuv2 segnet_nyuv2
results-pat: data-pat
	$(foreach table,$(PAT_TABLES),$(call pat_table,$(table))$(newline))
