"""`torchrun --nproc_per_node 2 -m lrfr_plugins.cli run`: DDP + Partial FC on two CPU processes (gloo)."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

RECIPE = """
lrfr: 1
name: ddp
seed: 2
data: {name: synthetic, params: {num_identities: 10, images_per_identity: 8}}
backbone: {name: tiny, params: {embedding_size: 16, widths: [4, 8, 8, 16]}}
head: {name: adaface}
degradations: [{name: cross-resolution}]
train: {epochs: 2, batch_size: 8, threads: 1, log_every: 1, sample_rate: 0.5, checkpoint_every: 3}
eval: [{name: synthetic, params: {num_identities: 4, images_per_identity: 2, num_pairs: 20, sizes: [112, 7]}}]
export: {onnx: false}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_one_model_with_sharded_centres(tmp_path):
    path = tmp_path / "ddp.yaml"
    path.write_text(textwrap.dedent(RECIPE))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "lrfr_plugins.cli", "run", str(path), "--out", str(run),
           "--no-progress"]
    result = subprocess.run(cmd, env={**os.environ, "LRFR_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rank0 = torch.load(run / "checkpoint.pt", weights_only=True)
    rank1 = torch.load(run / "checkpoint-rank1.pt", weights_only=True)
    assert (rank0["world_size"], rank0["rank"], rank1["rank"]) == (2, 0, 1)
    assert rank0["step"] == rank1["step"] == 2 * (80 // (8 * 2))  # each step takes a batch from each rank
    for key, value in rank0["backbone"].items():  # DDP kept the replicas identical
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):  # BN buffers stay per rank
            assert torch.equal(value, rank1["backbone"][key]), key
    assert rank0["classifier"]["weight"].shape == rank1["classifier"]["weight"].shape == (5, 16)  # 10 classes / 2
    assert torch.equal(rank0["head"]["batch_mean"], rank1["head"]["batch_mean"])  # AdaFace saw the global batch
    metrics = json.loads((run / "metrics.json").read_text())  # written once, by rank 0, after evaluation
    assert metrics["train"]["steps"] == 10 and metrics["eval"][0]["protocol"] == "synthetic"
    assert (run / "run.log").exists() and (run / "run-rank1.log").exists()
