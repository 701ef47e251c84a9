"""Generate the previous release's record files with the code on main (run from /work/main's venv)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from spinn_export.export.exporter import export_checkpoints
from spinn_export.export.formats import parse_formats
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.data import builtin_dataset
from spinn_export.task.train import TrainConfig

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
dense_net = mlp_network(MLPSpec(4, (8, 8), 1))
# the tiny checkpoint: 4 -> 8 -> 8 -> 1
dense = save_checkpoint(out / "dense.safetensors", dense_net, {"variant": "dense"})
net18 = mlp_network(MLPSpec(18, (16, 16), 2))
d18 = save_checkpoint(out / "d18.safetensors", net18, {"variant": "dense"})
data = builtin_dataset(seed=0, n_train=128, n_val=64, n_test=16)
prune(net18, data, PruneConfig(Target.params(0.5), method="structured", rounds=2, finetune=TrainConfig(epochs=0),
                               calibration_samples=32), out / "prune-structured", metadata={"variant": "dense"},
      progress=False)
export_checkpoints([d18, out / "prune-structured" / "structured.safetensors"], out / "artifacts", parse_formats("onnx"))
proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench",
                       f"--spinn-artifacts={out / 'artifacts'}", "--spinn-backends=ort-cpu",
                       "--spinn-variants=dense,structured", "--spinn-batches=1", "--spinn-quick",
                       "--spinn-paired=ort-cpu", "--spinn-threads=1", f"--benchmark-json={out / 'bench.json'}"],
                      capture_output=True, text=True, check=False)
print(proc.stdout[-2000:], proc.stderr[-2000:])
# the sweep, as a user runs it
x = np.random.default_rng(0).uniform(-1, 1, (600, 4)).astype(np.float32)
pd.DataFrame(x, columns=list("abcd")).assign(y=np.sin(x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3]).to_csv(
    out / "data.csv", index=False)
proc = subprocess.run([sys.executable, "-m", "spinn_export", "sweep", str(dense), "--targets", "0.5", "--data",
                       str(out / "data.csv"), "--inputs", "a,b,c,d", "--target-columns", "y", "--rounds", "1",
                       "--finetune-epochs", "1", "--batch", "16", "--paired-processes", "1", "--paired-cycles", "4",
                       "--out", str(out / "sweep")], capture_output=True, text=True, check=False)
print(proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
