"""Mesh and sharding rules; 1 device vs 8 devices (data, and data x model) give the same losses."""

from __future__ import annotations

import json
import sys
import textwrap

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import _train_helpers as h
from camjax.train import sharding


def test_mesh_shape_resolves_all_devices_and_checks_products():
  assert sharding.mesh_shape(-1, 1, 8) == (8, 1)
  assert sharding.mesh_shape(-1, 2, 8) == (4, 2)
  assert sharding.mesh_shape(2, 4, 8) == (2, 4)
  with pytest.raises(ValueError, match="mesh.model"):
    sharding.mesh_shape(-1, 3, 8)
  with pytest.raises(ValueError, match="mesh.data"):
    sharding.mesh_shape(3, 2, 8)


def test_param_spec_shards_output_channels_of_kernels_only():
  assert sharding.param_spec("blocks/0/conv/kernel", (3, 3, 8, 16), 2) == P(None, None, None, "model")
  assert sharding.param_spec("blocks/0/conv/kernel", (3, 3, 8, 15), 2) == P()  # not divisible
  assert sharding.param_spec("blocks/0/norm/scale", (16,), 2) == P()
  assert sharding.param_spec("head/classifier/kernel", (16, 4), 1) == P()
  # Optimizer moments follow the rule through their own paths.
  tree = {"mu": {"conv": {"kernel": np.zeros((3, 3, 4, 8))}}}
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  assert sharding.tree_shardings(mesh, tree)["mu"]["conv"]["kernel"].spec == P()


def test_host_contiguity_of_mesh_rows():
  # The batch layout needs every process's devices to fill adjacent whole rows of 'data'.
  assert sharding.rows_are_host_contiguous(np.array([[0, 0], [0, 0], [1, 1], [1, 1]]))
  assert sharding.rows_are_host_contiguous(np.array([[1], [1], [0], [0]]))  # any process order, if adjacent
  assert not sharding.rows_are_host_contiguous(np.array([[0], [1], [0], [1]]))  # interleaved hosts
  assert not sharding.rows_are_host_contiguous(np.array([[0, 0], [1, 1], [0, 0]]))


def test_mesh_uses_jax_make_mesh_with_auto_axes_and_host_contiguous_rows():
  mesh = sharding.make_mesh(-1, 1)
  assert mesh.axis_names == (sharding.DATA, sharding.MODEL)
  assert set(mesh.axis_types) == {jax.sharding.AxisType.Auto}
  assert sharding.rows_are_host_contiguous(np.vectorize(lambda d: d.process_index)(mesh.devices))
  assert sharding.path_str(jax.tree_util.tree_flatten_with_path({"a": [{"b": 1}]})[0][0][0]) == "a/0/b"


def test_batch_size_must_divide_over_data_devices():
  mesh = sharding.make_mesh(1, 1, jax.devices()[:1])
  assert sharding.per_device_batch(8, mesh.shape[sharding.DATA]) == 8
  with pytest.raises(ValueError, match="grad_accum_steps=3 does not divide the per-device batch 4"):
    sharding.per_device_batch(8, 2, grad_accum_steps=3)
  assert sharding.gather_json({"a": 1}) == [{"a": 1}]


DRIVER = textwrap.dedent("""
  import json, sys, jax, numpy as np
  from camjax import train
  from camjax.train.metrics import read_metrics
  import tiny_config
  assert jax.device_count() == 8, jax.devices()
  out = {}
  for name, devices, data, model in [("one", jax.devices()[:1], 1, 1), ("data8", None, -1, 1),
                                     ("data4_model2", None, -1, 2)]:
    c = tiny_config.get_config()
    c.training.num_steps = 5
    c.training.checkpoint_every = 5
    c.mesh.data, c.mesh.model = data, model
    workdir = sys.argv[1] + "/" + name
    result = train.train(c, workdir, devices=devices)
    kernel = result.state["params"]["blocks"][1]["conv"]["kernel"]
    out[name] = {"losses": [r["loss"] for r in read_metrics(workdir, "train")],
                 "spec": str(kernel.sharding.spec), "num_shards": len(kernel.addressable_shards),
                 "shard_shape": list(kernel.addressable_shards[0].data.shape)}
  print("RESULT" + json.dumps(out))
""")


def test_one_device_and_eight_devices_give_the_same_losses(tmp_path):
  proc = h.run([sys.executable, "-c", DRIVER, str(tmp_path)], devices=8)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  one = np.asarray(out["one"]["losses"])
  assert len(one) == 5
  for name in ("data8", "data4_model2"):
    np.testing.assert_allclose(out[name]["losses"], one, rtol=1e-5)
  # The model axis really splits the kernel's output channels (8 -> 4 per device).
  assert out["data4_model2"]["spec"] == str(P(None, None, None, "model"))
  assert out["data4_model2"]["shard_shape"] == [3, 3, 4, 4]
  assert out["data8"]["shard_shape"] == [3, 3, 4, 8]
