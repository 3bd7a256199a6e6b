"""add_longtailseg_config: the long-tail keys and their defaults, nothing else.

docs/CONFIG_REFERENCE.md is generated from this file (tools/make_config_reference.py): each key's
comment is the block of ``#`` lines right above it."""
from detectron2.config import CfgNode as CN


def add_longtailseg_config(cfg):
    """Add LongTailSeg's config keys (with DeepLab's, which our semantic-segmentation heads extend)."""
    if not hasattr(cfg.INPUT.CROP, "SINGLE_CATEGORY_MAX_AREA"):
        from detectron2.projects.deeplab import add_deeplab_config

        add_deeplab_config(cfg)

    cfg.MODEL.LONG_TAIL = CN()
    # JSON written by tools/compute_class_stats.py for the first training dataset. "" = resolved
    # once per run before the model is built (longtailseg.engine.resolve_class_stats, which
    # tools/train_net.py, Trainer and build_model call): the class_stats.json beside a local
    # MODEL.WEIGHTS, else OUTPUT_DIR/class_stats.json if it was counted from the same data, else
    # the training split is counted into that file.
    cfg.MODEL.LONG_TAIL.CLASS_STATS = ""
    # Semantic segmentation groups by share of all training pixels (ignored ones in the total, as
    # in ADE20K's objectInfo150 Ratio): head > HEAD_RATIO, tail <= TAIL_RATIO, body between
    # (DisAlign's ADE20K split [:20], [20:75], [75:]). LVIS uses its r/c/f field.
    cfg.MODEL.LONG_TAIL.HEAD_RATIO = 0.01
    cfg.MODEL.LONG_TAIL.TAIL_RATIO = 0.001

    # Classification loss of the semantic-segmentation heads (longtailseg/longtail/losses.py).
    cfg.MODEL.LONG_TAIL.LOSS = CN()
    # One of CE, Focal, CB, CBFocal, BMS, LA, LDAM, Seesaw, PAT. All but CE, Focal and PAT use
    # the class counts of CLASS_STATS.
    cfg.MODEL.LONG_TAIL.LOSS.NAME = "CE"
    # Focal and CBFocal: focusing parameter gamma of (1 - p_y)^gamma (Lin et al. 2017).
    cfg.MODEL.LONG_TAIL.LOSS.FOCAL_GAMMA = 2.0
    # CB and CBFocal: beta of the effective number (1 - beta^n) / (1 - beta) (Cui et al. 2019);
    # expects raw counts (with pixel counts in the millions every class gets the same weight
    # unless beta is closer to 1).
    cfg.MODEL.LONG_TAIL.LOSS.CB_BETA = 0.9999
    # LA: tau of the logit adjustment z + tau * log prior (Menon et al. 2021).
    cfg.MODEL.LONG_TAIL.LOSS.LA_TAU = 1.0
    # LDAM: largest class margin and logit scale s (Cao et al. 2019; s = 30 assumes normalised
    # features and weights, use 1 on a plain linear classifier).
    cfg.MODEL.LONG_TAIL.LOSS.LDAM_MAX_MARGIN = 0.5
    cfg.MODEL.LONG_TAIL.LOSS.LDAM_SCALE = 30.0
    # LDAM-DRW: from this iteration on, each pixel's loss is weighted by the class-balanced weight
    # of its class with LDAM_DRW_BETA (Cao et al. 2019 defer it to the last 20 % of training);
    # -1 = no re-weighting. The trainer tells the loss the iteration.
    cfg.MODEL.LONG_TAIL.LOSS.LDAM_DRW_START = -1
    cfg.MODEL.LONG_TAIL.LOSS.LDAM_DRW_BETA = 0.9999
    # Seesaw: exponents of the mitigation (n_j/n_i)^p and compensation (sigma_j/sigma_i)^q
    # factors (Wang et al. 2021); counts are the static class statistics.
    cfg.MODEL.LONG_TAIL.LOSS.SEESAW_P = 0.8
    cfg.MODEL.LONG_TAIL.LOSS.SEESAW_Q = 2.0
    # EQLv2 (box classifier only; Tan et al. 2021, eqs. 5-7): the negative weight of class j is
    # q_j = 1 / (1 + exp(-GAMMA (g_j - MU))), g_j its accumulated positive / negative gradient
    # ratio, and the positive weight 1 + ALPHA (1 - q_j). Paper: 12, 0.8, 4.
    cfg.MODEL.LONG_TAIL.LOSS.EQLV2_GAMMA = 12.0
    cfg.MODEL.LONG_TAIL.LOSS.EQLV2_MU = 0.8
    cfg.MODEL.LONG_TAIL.LOSS.EQLV2_ALPHA = 4.0
    # PAT: temperature tau of p = softmax(z / tau).
    cfg.MODEL.LONG_TAIL.LOSS.PAT_TAU = 1.0
    # PAT: the constant K of beta = exp(K (1 - p)) / 2; 0 = the number of classes (authors' code).
    # 3.0 trains at any class count (beta <= e^3 / 2). A K above PAT_MAX_EXPONENT (so K = 0 with
    # more than 30 classes) would saturate beta for every poorly classified pixel and is refused.
    cfg.MODEL.LONG_TAIL.LOSS.PAT_CONSTANT = 3.0
    # PAT: stop the gradient through beta (the authors do not).
    cfg.MODEL.LONG_TAIL.LOSS.PAT_DETACH_BETA = False
    # PAT: bound on the exponent K (1 - p), so beta <= exp(bound) / 2 stays finite in float32
    # (K = 150 overflows); a PAT_CONSTANT above it is refused, as it could reach the bound.
    cfg.MODEL.LONG_TAIL.LOSS.PAT_MAX_EXPONENT = 30.0
    # PAT: class-wise gradient homogenization (each class's loss in an image divided by its mask
    # size, then mean over present classes and images); False = mean over pixels.
    cfg.MODEL.LONG_TAIL.LOSS.PAT_HOMOGENIZE = True

    # BLV (balancing logit variation), training only: noise |clamp(N(0, SIGMA^2), -1, 1)| scaled
    # by each class's rarity is added to the logits before the loss. Authors' default SIGMA = 4.
    cfg.MODEL.LONG_TAIL.BLV = CN()
    cfg.MODEL.LONG_TAIL.BLV.ENABLED = False
    # Std of the noise before the clamp ("xavier": the gain of Glorot's std).
    cfg.MODEL.LONG_TAIL.BLV.SIGMA = 4.0
    # The noise's law, as PAT compares them: "gaussian" (BLV's own), "uniform" (U(-sqrt(3) SIGMA,
    # sqrt(3) SIGMA), std SIGMA) or "xavier" (torch.nn.init.xavier_normal_ on the noise tensor,
    # gain SIGMA); see longtailseg/longtail/variation.py.
    cfg.MODEL.LONG_TAIL.BLV.DISTRIBUTION = "gaussian"

    # Generalized re-weighting: class weights w_c = r_c^-RHO (sum C) in the classification loss.
    # DisAlign's RHO: 0.2 for ADE20K semantic segmentation, 0.8 for LVIS.
    cfg.MODEL.LONG_TAIL.GRW = CN()
    cfg.MODEL.LONG_TAIL.GRW.ENABLED = False
    cfg.MODEL.LONG_TAIL.GRW.RHO = 0.2

    # DisAlign stage 2: the model of MODEL.WEIGHTS (stage 1) is frozen, BatchNorm statistics
    # included; only the calibration (alpha, beta, confidence layer) is trained.
    cfg.MODEL.LONG_TAIL.DISALIGN = CN()
    cfg.MODEL.LONG_TAIL.DISALIGN.ENABLED = False
    # std of the confidence layer's normal initialisation (bias 0), as in the authors' code.
    cfg.MODEL.LONG_TAIL.DISALIGN.CONFIDENCE_INIT_STD = 0.01
    # The config that trains stage 1 (used only to tell the user how to make MODEL.WEIGHTS).
    cfg.MODEL.LONG_TAIL.DISALIGN.STAGE1_CONFIG = ""

    # MEDOE (longtailseg/modeling/sem_seg/medoe.py, math in longtail/experts.py); selected by
    # MODEL.SEM_SEG_HEAD.NAME: "MEDOEHead". Choices where the paper is silent: ARCHITECTURE.md.
    cfg.MODEL.MEDOE = CN()
    # The registered head each expert is built from (context module + classifier).
    cfg.MODEL.MEDOE.EXPERT_HEAD = "LongTailDeepLabV3PlusHead"
    # One entry per expert (K = its length): the class groups it owns, joined by "+". The first
    # must own every class (it alone trains the backbone). Paper: head+body+tail, body+tail, tail.
    cfg.MODEL.MEDOE.EXPERT_CLASS_GROUPS = ["head+body+tail", "body+tail", "tail"]
    # Channels of experts 2..K (context module, decoder, classifier input); expert 1 keeps the
    # head's (SEM_SEG_HEAD.CONVS_DIM / ASPP_CHANNELS). The experts share the backbone features and
    # their projection (DeepLabV3+'s low-level 1x1 convs). 64 = a quarter of the R-50 configs'
    # 256: +19 % parameters over the CE model with 3 experts; 0 = the head's width (+84 %).
    cfg.MODEL.MEDOE.EXPERT_CHANNELS = 64
    # MCN (MEDOE's Table 5): one context module shared by K classifiers (one per entry of
    # EXPERT_CLASS_GROUPS, label-masked as the experts), all training it and the backbone; the
    # ensembles combine the classifiers as they combine experts (EXPERT_CLASS_GROUPS all
    # "head+body+tail": every classifier on every class). False = MEDOE's own experts.
    cfg.MODEL.MEDOE.SHARED_CONTEXT = False
    # lambda of CE + lambda * (L2 + KL) per expert; the paper's value did not survive.
    cfg.MODEL.MEDOE.AUX_LOSS_WEIGHT = 0.2
    # How the experts' outputs become the prediction: "none" = expert 1 (stage 1, MED);
    # "MOE" = stage 2, the learned decision-maker (only it trains, from MODEL.WEIGHTS = stage 1);
    # untrained baselines: "softmax_threshold", "argmax_confidence", "group_average".
    cfg.MODEL.MEDOE.ENSEMBLE = "none"
    # softmax_threshold: an expert decides a pixel when its top probability reaches this (paper: 0.3).
    cfg.MODEL.MEDOE.SOFTMAX_THRESHOLD = 0.3
    # MOE: weight of the penalty on tail-class probability at non-tail pixels.
    cfg.MODEL.MEDOE.TAIL_PENALTY_WEIGHT = 0.1
    # Oracle (evaluation only): each pixel takes the most specific expert owning its true class.
    cfg.MODEL.MEDOE.ORACLE = False
    # The config that trains stage 1 (used only to tell the user how to make MODEL.WEIGHTS).
    cfg.MODEL.MEDOE.STAGE1_CONFIG = ""

    # ME, the model ensemble of MEDOE's Table 5 (MODEL.META_ARCHITECTURE "SemSegModelEnsemble",
    # longtailseg/modeling/sem_seg/model_ensemble.py): the networks of MEMBER_CONFIG whose trained
    # checkpoints MEMBER_WEIGHTS lists (two or more, read as data only), their softmax averaged.
    # Evaluation only (--eval-only, MODEL.WEIGHTS unused); each member is trained by MEMBER_CONFIG.
    cfg.MODEL.MODEL_ENSEMBLE = CN()
    cfg.MODEL.MODEL_ENSEMBLE.MEMBER_CONFIG = ""
    cfg.MODEL.MODEL_ENSEMBLE.MEMBER_WEIGHTS = []
    # Mixed precision (with Detectron2's SOLVER.AMP.ENABLED True): the autocast dtype, "float16"
    # (with a gradient scaler, checkpointed) or "bfloat16" (no scaler needed); "" = float16 on
    # CUDA, bfloat16 on the CPU (MODEL.DEVICE). Losses and class-statistics math stay float32.
    cfg.SOLVER.AMP.PRECISION = ""

    # The "uniform" test setting (MEDOE): also report metrics on test pixels sub-sampled with
    # SEED so that every class has as many pixels as the rarest (keys "<metric>-uniform").
    cfg.TEST.UNIFORM = CN()
    cfg.TEST.UNIFORM.ENABLED = False
    cfg.TEST.UNIFORM.SEED = 0
    # Which classes enter mIoU (and mDice), for every group and the uniform setting:
    # "standard" = every class in the ground truth or the prediction, a class predicted but absent
    # from the ground truth scoring IoU 0 (mmsegmentation, Detectron2; compare with papers only
    # under this rule); "ground_truth" = only classes with ground-truth pixels (predictions of
    # absent classes then lower only the present classes' IoU).
    cfg.TEST.MIOU_RULE = "standard"

    # Decode heads of longtailseg/modeling/sem_seg/decode_heads.py (they read the last of
    # SEM_SEG_HEAD.IN_FEATURES, CONVS_DIM channels).
    # LongTailFCNHead: number of 3x3 conv-norm-ReLU layers (FCN as in mmsegmentation: 2).
    cfg.MODEL.SEM_SEG_HEAD.FCN_NUM_CONVS = 2
    # LongTailFCNHead: concatenate the input to the convs' output and fuse with a 3x3 conv.
    cfg.MODEL.SEM_SEG_HEAD.FCN_CONCAT_INPUT = True
    # LongTailPSPHead: bins of the pyramid pooling (Zhao et al. 2017: 1x1, 2x2, 3x3, 6x6).
    cfg.MODEL.SEM_SEG_HEAD.PSP_POOL_SCALES = [1, 2, 3, 6]
    # LongTailOCRHead: channels of the pixel-region attention's keys, queries and values.
    cfg.MODEL.SEM_SEG_HEAD.OCR_KEY_CHANNELS = 256
    # LongTailOCRHead: weight of the plain cross-entropy on the auxiliary soft-region logits
    # (loss_sem_seg_aux; 0.4 in Yuan et al. 2020).
    cfg.MODEL.SEM_SEG_HEAD.OCR_AUX_LOSS_WEIGHT = 0.4
    # LongTailOCRHead: kernel of the auxiliary soft-region branch's conv-norm-ReLU (3 on a ResNet's
    # res5; the OCRNet paper's HRNet model uses 1, as mmsegmentation's FCN auxiliary head there).
    cfg.MODEL.SEM_SEG_HEAD.OCR_AUX_KERNEL_SIZE = 3
    # LongTailOCRHead: channels of that conv; 0 = CONVS_DIM. The HRNet-W48 model: 720 (its input's).
    cfg.MODEL.SEM_SEG_HEAD.OCR_AUX_CHANNELS = 0

    # ---- Backbones from timm: MODEL.BACKBONE.NAME "build_timm_backbone" (modeling/backbone/) ----
    cfg.MODEL.TIMM = CN()
    # The timm model (timm.list_models()): "resnest101e" (ResNeSt-101), "hrnet_w48", "hrnet_w18", ...
    # Randomly initialised; its ImageNet weights come from MODEL.WEIGHTS, converted once by
    # tools/convert_pretrained_weights.py from timm's published file.
    cfg.MODEL.TIMM.NAME = "resnest101e"
    # Features returned, named by stage as Detectron2's ResNet names them: "stem" (stride 2),
    # "res2" ... "res5" (strides 4 ... 32, or the output stride where dilated).
    cfg.MODEL.TIMM.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    # 32, 16 or 8: dilate the last stages instead of striding (ResNet-family models; HRNet: 32 only).
    cfg.MODEL.TIMM.OUTPUT_STRIDE = 32
    # Also return "concat": the OUT_FEATURES upsampled bilinearly to the finest and concatenated
    # (HRNetV2's representation, the feature OCRNet on HRNet reads).
    cfg.MODEL.TIMM.CONCAT_OUTPUT = False
    # Norm replacing the model's BatchNorm2d: "BN" (kept), "SyncBN", "naiveSyncBN" (syncs CPU
    # processes too), "FrozenBN".
    cfg.MODEL.TIMM.NORM = "BN"
    # Keyword arguments of timm.create_model (new keys allowed in a config file, not on the
    # command line): e.g. HRNet's feature_location "" (the raw branches) and stage widths
    # (stem_width, stage1 ... stage4), a ResNet's layers / channels / stem_width; tiny widths for tests.
    cfg.MODEL.TIMM.MODEL_KWARGS = CN(new_allowed=True)

    # ---- Encoder-decoder segmenters: U-Net, Attention U-Net, U-Net++, SegNet (PAT's systems) ----
    # longtailseg/modeling/encoders.py and sem_seg/unet.py, sem_seg/segnet.py.
    # LongTailUNetHead, LongTailAttentionUNetHead, LongTailUNetPlusPlusHead: output channels of
    # each decoder block, coarsest first (smp's Unet default). As many blocks as IN_FEATURES (the
    # last upsamples 2x without skip: encoders whose finest feature is at stride 2), or one fewer
    # for U-Net / Attention U-Net (every block fuses a skip: the VGG encoder's stride-1 conv1).
    # U-Net++ needs as many as IN_FEATURES. The heads' norm: SEM_SEG_HEAD.NORM, "BN" or "".
    cfg.MODEL.SEM_SEG_HEAD.UNET_DECODER_CHANNELS = [256, 128, 64, 32, 16]
    # LongTailSegNetHead: cap on the decoder's widths (0 = mirror the encoder, the paper's
    # SegNet; MEDOE's narrower experts set it). An unpooling's input keeps the encoder's width
    # (its indices have those channels): the other convolutions and the classifier's input narrow.
    cfg.MODEL.SEM_SEG_HEAD.SEGNET_MAX_CHANNELS = 0
    # build_vgg_encoder_backbone: VGG-style encoder of U-Net / SegNet, trained from scratch. Stage
    # i (1-based): CONVS_PER_STAGE[i-1] 3x3 conv-norm-ReLU to CHANNELS[i-1] at stride 2^(i-1)
    # ("conv{i}"), then 2x2 max-pooling with argmax indices ("pool{i}", stride 2^i).
    cfg.MODEL.VGG_ENCODER = CN()
    # Default: U-Net's contracting path (Ronneberger et al. 2015). SegNet (VGG16): [64, 128,
    # 256, 512, 512] with CONVS_PER_STAGE [2, 2, 3, 3, 3] and POOL_LAST True.
    cfg.MODEL.VGG_ENCODER.CHANNELS = [64, 128, 256, 512, 1024]
    cfg.MODEL.VGG_ENCODER.CONVS_PER_STAGE = [2, 2, 2, 2, 2]
    # Detectron2 norm of the convolutions ("BN", "SyncBN", "naiveSyncBN", "GN", "" for none).
    cfg.MODEL.VGG_ENCODER.NORM = "BN"
    # Pool the last stage too ("pool{S}": SegNet's decoder starts from it); U-Net does not.
    cfg.MODEL.VGG_ENCODER.POOL_LAST = False
    # build_smp_encoder_backbone: an encoder of segmentation-models-pytorch by its name
    # ("resnet34", "vgg16_bn", "efficientnet-b0", "tu-<timm model>"), randomly initialised
    # (weights from a local file through MODEL.WEIGHTS); features "stage1".."stage{DEPTH}" at
    # stride 2^i.
    cfg.MODEL.SMP_ENCODER = CN()
    cfg.MODEL.SMP_ENCODER.NAME = "resnet34"
    cfg.MODEL.SMP_ENCODER.DEPTH = 5

    # MiT-B0 ... B5, SegFormer's Mix Transformer encoder (longtailseg/modeling/mit.py), selected by
    # MODEL.BACKBONE.NAME: "build_mit_backbone". Its stages are res2 ... res5 (strides 4 ... 32).
    # ImageNet weights: convert the published file with tools/convert_mit_weights.py and name
    # the result in MODEL.WEIGHTS.
    cfg.MODEL.MIT = CN()
    # One of mit_b0, mit_b1, mit_b2, mit_b3, mit_b4, mit_b5 (the published encoders' widths and depths).
    cfg.MODEL.MIT.VARIANT = "mit_b3"
    # Per-stage channels, blocks and attention heads (four each); [] = the variant's. For tiny
    # test models; the published weights fit only the variant's values.
    cfg.MODEL.MIT.EMBED_DIMS = []
    cfg.MODEL.MIT.DEPTHS = []
    cfg.MODEL.MIT.NUM_HEADS = []
    # Stochastic depth: drop-path rate rising linearly over the blocks to this (SegFormer: 0.1).
    cfg.MODEL.MIT.DROP_PATH_RATE = 0.1
    # The stages the backbone returns.
    cfg.MODEL.MIT.OUT_FEATURES = ["res2", "res3", "res4", "res5"]

    # The optimizer (longtailseg/engine/optimizer.py): "SGD" (Detectron2's, with SOLVER.MOMENTUM
    # and NESTEROV) or "ADAMW" (torch.optim.AdamW, betas (0.9, 0.999): SegFormer's and MEDOE's
    # transformer recipe). Both decay every weight by SOLVER.WEIGHT_DECAY but normalisation
    # layers' (SOLVER.WEIGHT_DECAY_NORM, 0 by default). Detectron2 projects name this key so.
    cfg.SOLVER.OPTIMIZER = "SGD"
    # Learning rate of every parameter outside model.backbone (decode head, MEDOE experts):
    # SOLVER.BASE_LR x this; the schedule scales it as the base rate. SegFormer: 10.
    cfg.SOLVER.HEAD_LR_MULTIPLIER = 1.0

    # DistributedDataParallel(find_unused_parameters=...): True for models whose forward leaves
    # parameters without gradient (frozen stage 2, experts that skip a batch).
    cfg.MODEL.DDP_FIND_UNUSED_PARAMETERS = False

    # Processes used to count classes when CLASS_STATS is computed on first use (and to check
    # the validation labels before training).
    cfg.DATALOADER.CLASS_STATS_WORKERS = 2
    # An image without its label (or a label without its image, or an LVIS image absent) stops
    # the run before training; True trains and evaluates on the complete pairs only.
    cfg.DATASETS.ALLOW_MISSING_FILES = False

    # ---- LVIS instance segmentation: LongTailStandardROIHeads, LongTailCascadeROIHeads ----
    # Their box predictor (every cascade stage's) reads MODEL.LONG_TAIL as well: BLV on the K foreground logits (instance
    # counts), GRW over the K foreground classes (background weight 1; LVIS configs set RHO 0.8),
    # DisAlign calibration of the foreground logits (background passed through), LOSS.NAME.
    # Cosine box classifier: L2-normalised features and weight rows times a learnable scale,
    # no bias, over all K + 1 outputs (background included, as in the DisAlign authors' head).
    cfg.MODEL.ROI_BOX_HEAD.COSINE = CN()
    cfg.MODEL.ROI_BOX_HEAD.COSINE.ENABLED = False
    # Initial value of the learnable scale (authors: 20).
    cfg.MODEL.ROI_BOX_HEAD.COSINE.INIT_SCALE = 20.0
    # NorCal (Pan et al. 2021), post-hoc, inference only: each foreground score divided by the
    # class's training instance count to the power GAMMA, background kept, scores renormalised.
    # Softmax scores only. The paper tunes GAMMA per model on validation data.
    cfg.MODEL.ROI_BOX_HEAD.NORCAL = CN()
    # Apply NorCal to the test-time box scores (every cascade stage's, before their mean).
    cfg.MODEL.ROI_BOX_HEAD.NORCAL.ENABLED = False
    # The power of the instance count (0 = no calibration).
    cfg.MODEL.ROI_BOX_HEAD.NORCAL.GAMMA = 0.6
    # Detectron2 main's keys of its LVIS recipe, added here for Detectron2 v0.6 (same names and
    # defaults; a Detectron2 that has them keeps its own), so a config dumped with either loads
    # with the other. LongTailStandardROIHeads and LongTailCascadeROIHeads read them on both.
    if not hasattr(cfg.MODEL.ROI_BOX_HEAD, "USE_SIGMOID_CE"):
        # Sigmoid cross-entropy: one binary CE per foreground class; boxes scored by sigmoids.
        cfg.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False
        # Federated loss (needs USE_SIGMOID_CE): only the batch's ground-truth classes and
        # negative classes drawn by image count ^ FED_LOSS_FREQ_WEIGHT_POWER (image counts of
        # MODEL.LONG_TAIL.CLASS_STATS), FED_LOSS_NUM_CLASSES in all.
        cfg.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False
        cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER = 0.5
        cfg.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES = 50
    if not hasattr(cfg.DATALOADER, "REPEAT_SQRT"):
        # RepeatFactorTrainingSampler: repeat factor max(1, sqrt(t / f)) if True, else max(1, t / f).
        cfg.DATALOADER.REPEAT_SQRT = True
    # Detectron2 main's other keys that v0.6 lacks, with main's defaults, so that a config.yaml
    # dumped on main loads on v0.6; v0.6 has nothing that reads them, and a value other than the
    # default is refused there (config/detectron2_main.py).
    if not hasattr(cfg.SOLVER, "NUM_DECAYS"):
        # Main: the end learning rate of WarmupCosineLR.
        cfg.SOLVER.BASE_LR_END = 0.0
        # Main: the number of decays of WarmupStepWithFixedGammaLR.
        cfg.SOLVER.NUM_DECAYS = 3
        # Main: rescale the schedule's interval after the warm-up.
        cfg.SOLVER.RESCALE_INTERVAL = False
    if not hasattr(cfg, "FLOAT32_PRECISION"):
        # Main: PyTorch's float32 matmul / cuDNN precision ("" = PyTorch's default).
        cfg.FLOAT32_PRECISION = ""

    # ---- The run folder (longtailseg/engine/run_folder.py) ----
    cfg.RUN = CN()
    # A training without --resume into an OUTPUT_DIR holding another run's checkpoints is refused;
    # True deletes that run's model_*.pth, last_checkpoint and metrics.json and starts again.
    cfg.RUN.OVERWRITE = False
