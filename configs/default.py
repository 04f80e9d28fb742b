"""Shared defaults every camjax config starts from (not meant to be run by itself).

Each experiment config imports this file, calls ``get_config()`` and overrides
what differs. Any field can be changed on the command line, e.g.

  python -m camjax.main --config=configs/googlenet_gap.py --workdir=runs/g \
      --config.optimizer.lr=0.001 --config.model.pooling=gmp

The config is locked: a misspelt field name is an error, not a new field.
"""

import ml_collections

from camjax.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # one definition; configs use these names


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "train"  # train | eval | train_and_eval | cam; --mode on the command line wins

  c.model = ml_collections.ConfigDict()
  c.model.name = "googlenet_gap"
  c.model.pooling = "gap"  # gap | gmp
  c.model.num_classes = 1000
  c.model.use_bias = False
  c.model.dtype = "float32"  # compute dtype: float32 | bfloat16 (parameters stay float32)
  c.model.overrides = ml_collections.ConfigDict()  # extra constructor arguments of the model

  # WSOL training method (Choe et al., CVPR 2020 defaults); camjax.wsol holds the pieces.
  c.method = ml_collections.ConfigDict()
  c.method.name = "cam"  # cam | has | acol | spg | adl | cutmix
  c.method.has_grid_size = 4  # HaS: side of a hidden patch, pixels of the input
  c.method.has_drop_rate = 0.5  # HaS: probability that a patch is hidden
  c.method.acol_threshold = 0.7  # ACoL: branch A's normalised map at or above this is erased for branch B
  c.method.spg_thresholds = ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))  # SPG: (high, low) of its three stages
  c.method.adl_drop_rate = 0.75  # ADL: probability of the drop mask (else the importance map)
  c.method.adl_threshold = 0.9  # ADL: drop where attention >= this fraction of its max
  c.method.cutmix_beta = 1.0  # CutMix: Beta(beta, beta) of the mixing ratio
  c.method.cutmix_prob = 1.0  # CutMix: probability a batch is mixed

  c.data = ml_collections.ConfigDict()
  c.data.name = "ilsvrc2012_loc"  # ilsvrc2012_loc | cub200_2011 | openimages30k | camjax_shapes | synthetic
  c.data.builder_config = ""
  c.data.data_dir = ""  # TFDS data dir ('' = TFDS default)
  c.data.manual_dir = ""  # where the user's manual download lives (ImageNet, CUB)
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.image_size = 224
  c.data.eval_mode = "resize"  # resize | resize_crop (see camjax.data.pipeline.eval_batches)
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.enabled = True
  c.data.augment.scale = (0.08, 1.0)  # area fraction of the random-resized crop
  c.data.augment.ratio = (3 / 4, 4 / 3)
  c.data.augment.flip = True
  c.data.mean = IMAGENET_MEAN
  c.data.std = IMAGENET_STD
  c.data.max_boxes = 16
  c.data.worker_count = 0
  c.data.on_bad_data = "skip"  # skip | fail
  c.data.num_train_examples = 0  # synthetic data only: examples per epoch (0 = endless)

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "sgd"  # sgd | adam | adamw
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 5e-4  # on kernels only; biases and BatchNorm are not decayed
  c.optimizer.schedule = "step"  # constant | step | cosine
  c.optimizer.boundaries = (0.5, 0.75)  # step schedule: fractions of training where lr is multiplied
  c.optimizer.decay_factor = 0.1
  c.optimizer.warmup_steps = 0
  c.optimizer.grad_clip_norm = 0.0  # 0 = no clipping
  # Layers new to the CAM architecture (added conv + classifier) learn faster.
  c.optimizer.new_layer_patterns = ("head/.*",)
  c.optimizer.new_layer_lr_mult = 10.0

  c.training = ml_collections.ConfigDict()
  c.training.global_batch_size = 256
  c.training.num_steps = 0  # > 0 wins over num_epochs
  c.training.num_epochs = 0.0
  c.training.grad_accum_steps = 1  # micro-batches per step (global batch larger than memory)
  c.training.seed = 0
  c.training.log_every = 50
  c.training.checkpoint_every = 1000
  c.training.keep_checkpoints = 3
  c.training.progress_bar = True
  c.training.preemption_check_every = 10  # multi-process runs: steps between SIGTERM polls (one collective)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1 = all devices left after the model axis
  c.mesh.model = 1

  c.pretrained = ml_collections.ConfigDict()
  c.pretrained.path = ""  # a camjax workdir / checkpoint step dir, or a torchvision .pth file
  c.pretrained.format = "auto"  # auto (by path) | camjax | torchvision (via camjax.weights)
  c.pretrained.load = (".*",)  # regexes on parameter paths to copy from it
  c.pretrained.skip = ()  # regexes of parameters NOT to copy (e.g. a classifier of another size)
  c.pretrained.freeze = ()  # regexes of parameters that get zero updates

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 64
  c.eval.protocols = ("paper", "wsol")
  c.eval.top_k = 5
  c.eval.paper_threshold = 0.2  # fraction of the map's max (CAM paper)
  c.eval.wsol_threshold_step = 0.01  # CAM threshold spacing for MaxBoxAcc / PxAP
  c.eval.iou_thresholds = (30, 50, 70)
  c.eval.max_examples = 0  # 0 = whole split
  c.eval.samples_per_class = 0  # > 0: score only this many images per class (the WSOL standard's train_fullsup size)
  c.eval.samples_seed = 0  # which ones (the same images for every run that scores with this seed)
  c.eval.output_subdir = ""  # results and report into WORKDIR/<this> (e.g. one folder per scored split)
  c.eval.baseline = False  # also score the centre baseline (mean-size centre box, centred Gaussian map)
  c.eval.box_rounding = "wsol"  # wsol: boxes scaled with int() truncation as in the WSOL code; pixel

  c.report = ml_collections.ConfigDict()
  c.report.enabled = False  # metrics.json, CAM pictures and report.html in the workdir after evaluation
  c.report.num_images = 16  # test images in the overlay grid
  c.report.cmap = "jet"

  c.lock()
  return c
