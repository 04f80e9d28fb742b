"""Shared settings of the ILSVRC 2012 experiments (run a named config instead, e.g. googlenet_gap).

  python -m camjax.main --config=configs/googlenet_gap.py --workdir=runs/googlenet_gap

Fine-tuning on ILSVRC 2012 (CLS-LOC) as in Zhou et al. 2016: SGD with momentum
0.9, weight decay 5e-4 on kernels, a step schedule, the layers added for CAM
(3x3 conv + classifier; ``new_layer_patterns``) at 10x the base learning rate.
Start from ImageNet weights with
--config.pretrained.path=<torchvision .pth file or camjax workdir>. ILSVRC must be
downloaded by hand: --config.data.manual_dir=<dir with the tars>.
"""

from configs import default


def get_config():
  c = default.get_config()
  c.model.num_classes = 1000
  c.data.name = "ilsvrc2012_loc"
  c.data.image_size = 224
  c.data.eval_mode = "resize"
  c.optimizer.name = "sgd"
  c.optimizer.lr = 0.001
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 5e-4
  c.optimizer.schedule = "step"
  c.optimizer.boundaries = (0.5, 0.75)
  c.optimizer.decay_factor = 0.1
  c.optimizer.new_layer_patterns = ("cam_conv/.*", "head/.*")
  c.optimizer.new_layer_lr_mult = 10.0
  c.training.global_batch_size = 256
  c.training.num_epochs = 20.0
  c.training.log_every = 100
  c.training.checkpoint_every = 2000
  c.eval.batch_size = 200
  return c
