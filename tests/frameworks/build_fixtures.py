#!/usr/bin/env python
"""Build the PINN frameworks' own networks as torch.export fixtures.

Run inside an environment where the frameworks of requirements.txt are installed (``tox -e frameworks``,
or the venv commands of README.md beside this file).  For every network it

* builds the framework's own class SMALL (hidden width 16, 2-4 layers; one 6x256 PhysicsNeMo
  FullyConnected for performance tests),
* trains it briefly (full-batch Adam, lr 3e-3, fixed seed) on a 1-D heat-equation data set made here,
* saves it with the one-line torch.export form, dynamic batch dimension::

      torch.export.save(torch.export.export(model, (x[:2],),
                        dynamic_shapes=({0: torch.export.Dim("batch")},)), path)

* loads the file back with ``torch.export.load`` and compares it with the module on a few rows.

Every saved module has ``forward(x)`` with ONE (batch, in_features) float32 tensor and returns ONE
(batch, 1) tensor.  A framework whose network takes dicts or ``Points`` is wrapped in a small
``nn.Module``, as a user would, and nothing else about the framework's module is changed: the file
holds THEIR graph exactly as torch.export traces it.

Outputs (under ``--out``, default tests/data/frameworks): ``<framework>-<network>.pt2``, ``heat.csv``
(x,t,u), ``heat-deeponet.csv`` (b0..b3,x,t,u) and ``index.json``.  Nothing is downloaded at run time.
A network that cannot be built or exported gets an index entry with ``"exported": false`` and its
one-line error instead of a file.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import math
import os
import random
import sys
import traceback
from pathlib import Path

os.environ.setdefault("DDE_BACKEND", "pytorch")  # DeepXDE picks its backend at import time

import torch
from torch import nn

TORCH_VERSION = "2.13.0"
ALPHA = 0.1
N_ROWS = 2000
DATA_SEED = 0
MODEL_SEED = 0
STEPS = 300
LR = 3e-3
BRANCH = (0.8, 0.35, 0.6, 0.15)  # DeepONet's branch input: 4 fixed numbers, the same on every row
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "tests" / "data" / "frameworks"


# ----------------------------------------------------------------------------------------- data
def heat_u(x: float, t: float) -> float:
    a = ALPHA * math.pi**2
    return math.exp(-a * t) * math.sin(math.pi * x) + 0.5 * math.exp(-4 * a * t) * math.sin(2 * math.pi * x)


def make_data(out: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded random (x, t) in [0,1]^2, written at 6 significant digits; training uses the written values."""
    rng = random.Random(DATA_SEED)
    rows = []
    for _ in range(N_ROWS):
        x = float(f"{rng.random():.6g}")
        t = float(f"{rng.random():.6g}")
        rows.append((x, t, float(f"{heat_u(x, t):.6g}")))
    with open(out / "heat.csv", "w", newline="\n") as f:
        f.write("x,t,u\n")
        f.writelines(f"{x:.6g},{t:.6g},{u:.6g}\n" for x, t, u in rows)
    with open(out / "heat-deeponet.csv", "w", newline="\n") as f:
        f.write("b0,b1,b2,b3,x,t,u\n")
        b = ",".join(f"{v:.6g}" for v in BRANCH)
        f.writelines(f"{b},{x:.6g},{t:.6g},{u:.6g}\n" for x, t, u in rows)
    xt = torch.tensor([[x, t] for x, t, _ in rows], dtype=torch.float32)
    u = torch.tensor([[u] for _, _, u in rows], dtype=torch.float32)
    xb = torch.cat([torch.tensor(BRANCH, dtype=torch.float32).expand(N_ROWS, 4), xt], dim=1)
    return xt, xb, u


# ------------------------------------------------------------------------------- environment
_TV_LIB = None  # keeps the stub op library alive


def import_torchvision() -> None:
    """Import torchvision although its compiled ops cannot load.

    PyPI's torchvision wheels are CUDA builds; beside the CPU torch 2.13.0 their ``_C.so`` does not load,
    and ``torchvision/_meta_registrations.py`` then fails on ``register_fake("torchvision::nms")``
    (RuntimeError: operator torchvision::nms does not exist).  timm imports torchvision and PhysicsNeMo
    imports timm, so we define the two op schemas it registers unconditionally (no kernels) and import
    again.  None of the networks here uses a torchvision op.
    """
    global _TV_LIB
    try:
        import torchvision

        return
    except ImportError:
        return
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _TV_LIB = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
        _TV_LIB.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401


def quiet_import(module: str):
    """Import a framework with its banners (DeepXDE's backend lines, Warp's CUDA warning) kept off stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        return importlib.import_module(module)


def version(dist: str) -> str:
    try:
        return f"{dist}=={importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{dist} (not installed)"


# --------------------------------------------------------------------------------- install
REQUIREMENTS = Path(__file__).resolve().parent / "requirements.txt"
# Installed apart from the plain `pip install` of the others:
# * nvidia-physicsnemo-sym is only an sdist whose setup.py always builds a CUDA extension (AMP kernels
#   that none of the Archs here use) and fails on CPU torch ("CUDA version not found"): its setup.py is
#   installed with ext_modules=[] and --no-build-isolation (setup.py imports torch).  Its dependency
#   numpoly then builds without isolation too, hence Cython/setuptools-scm/wheel first.
# * torchphysics declares numpy<2 while the PhysicsNeMo stack (pandas 3, zarr 3, opencv 5) needs numpy>=2:
#   --no-deps, then its other dependencies.  Its networks run on numpy 2.
SYM_DIST = "nvidia-physicsnemo-sym"
TP_DIST = "torchphysics"
TP_DEPS = ["pytorch-lightning>=2.0.0", "matplotlib>=3.0.0", "scipy>=1.6.3", "importlib-metadata", "jupyter"]
BUILD_TOOLS = ["Cython==3.3.1", "setuptools-scm==10.3.4", "wheel==0.48.0"]


def pins() -> dict[str, str]:
    out = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name, _, ver = line.partition("==")
            out[name.strip()] = ver.strip()
    return out


def pip(*args: str) -> None:
    import subprocess

    cmd = [sys.executable, "-m", "pip", "install", "-c", str(REQUIREMENTS), *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def install() -> int:
    """Install requirements.txt into this Python with torch kept at its pin (tox -e frameworks runs this)."""
    import hashlib
    import tarfile
    import tempfile
    import urllib.request

    req = pins()
    if req.get("torch") != TORCH_VERSION:
        print(f"requirements.txt must pin torch=={TORCH_VERSION}", file=sys.stderr)
        return 2
    plain = [f"{n}=={v}" for n, v in req.items() if n not in (SYM_DIST, TP_DIST)]
    pip(*plain)
    pip(*BUILD_TOOLS)
    def installed(dist: str) -> str | None:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return None

    if SYM_DIST in req and installed(SYM_DIST) != req[SYM_DIST]:
        ver = req[SYM_DIST]
        # PyPI's simple index (PEP 691 JSON), as pip reads it
        want = f"{SYM_DIST.replace('-', '_')}-{ver}.tar.gz"
        page = urllib.request.Request(f"https://pypi.org/simple/{SYM_DIST}/",
                                      headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        with urllib.request.urlopen(page, timeout=120) as r:
            files = json.load(r)["files"]
        sdist = next(f for f in files if f["filename"] == want)
        sdist["digests"] = sdist["hashes"]
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / sdist["filename"]
            print("+ download", sdist["url"], flush=True)
            with urllib.request.urlopen(sdist["url"], timeout=300) as r:
                archive.write_bytes(r.read())
            if hashlib.sha256(archive.read_bytes()).hexdigest() != sdist["digests"]["sha256"]:
                print(f"{archive.name}: sha256 does not match PyPI's", file=sys.stderr)
                return 1
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")
            src = next(p for p in Path(tmp).iterdir() if p.is_dir())
            setup_py = src / "setup.py"
            text = setup_py.read_text()
            patched = text.replace("ext_modules=[cuda_extension()]", "ext_modules=[]")
            if patched == text:
                print(f"{setup_py}: ext_modules=[cuda_extension()] not found; the patch needs a look", file=sys.stderr)
                return 1
            setup_py.write_text(patched)
            pip("--no-build-isolation", str(src))
    if TP_DIST in req and installed(TP_DIST) != req[TP_DIST]:
        pip("--no-deps", f"{TP_DIST}=={req[TP_DIST]}")
        pip(*TP_DEPS)
    import subprocess

    subprocess.run([sys.executable, "-m", "pip", "check"], check=False)  # torchphysics' numpy<2 is expected
    return 0


# ---------------------------------------------------------------------------------- wrappers
class SymArchWrapper(nn.Module):
    """PhysicsNeMo-Sym ``Arch``: dict in ({"x", "t"}), dict out ({"u"})."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net({"x": x[:, 0:1], "t": x[:, 1:2]})["u"]


class PointsWrapper(nn.Module):
    """TorchPhysics ``Model``: ``Points`` of the space x*t in, ``Points`` of u out."""

    def __init__(self, net: nn.Module, space):
        super().__init__()
        self.net = net
        self.space = space

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchphysics.problem.spaces import Points

        return self.net(Points(x, self.space)).as_tensor


class TensorWrapper(nn.Module):
    """A ``forward(*inputs)`` module (NeuroMANCER blocks) called with one tensor."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DeepXDEDeepONetWrapper(nn.Module):
    """DeepXDE ``DeepONet``: takes (branch (batch, 4), trunk (batch, 2)); here one (batch, 6) tensor."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x[:, :4], x[:, 4:]))


# ---------------------------------------------------------------------------------- networks
# Each builder returns (module to train and export, wrapper description or None).
def physicsnemo_fc(**options):
    def build():
        from physicsnemo.models.mlp import FullyConnected

        size = {"layer_size": 16, "num_layers": 3}
        size.update(options.pop("_size", {}))
        return FullyConnected(in_features=2, out_features=1, **size, **options), None

    return build


def sym_arch(module: str, cls: str, **options):
    def build():
        from physicsnemo.sym.key import Key

        arch = getattr(quiet_import(module), cls)
        net = arch(input_keys=[Key("x"), Key("t")], output_keys=[Key("u")], **options)
        return SymArchWrapper(net), "SymArchWrapper: dict in/out"

    return build


def tp_model(cls: str, adaptive: bool = False, **options):
    def build():
        import torchphysics as tp

        space_in = tp.spaces.R1("x") * tp.spaces.R1("t")
        space_out = tp.spaces.R1("u")
        kwargs = dict(options)
        if adaptive:
            kwargs["activations"] = tp.models.AdaptiveActivationFunction(nn.Tanh())
        net = getattr(tp.models, cls)(space_in, space_out, **kwargs)
        return PointsWrapper(net, space_in), "PointsWrapper: Points(x, R1('x')*R1('t')) in, .as_tensor out"

    return build


def nm_block(cls: str, **options):
    def build():
        from neuromancer.modules import blocks

        kwargs = dict(options)
        if isinstance(kwargs.get("nonlin"), str):
            kwargs["nonlin"] = getattr(nn, kwargs["nonlin"])
        # Blocks are forward(*inputs).  Exported bare, the one-line form fails: torch.export reads
        # dynamic_shapes=({0: batch},) against the var-positional `inputs` (a tuple) and answers "inputs[0]
        # is a tuple, but dynamic_shapes[0] is a dict" (it would want (({0: batch},),)).  A user's
        # one-tensor wrapper exports with the one-line form, so that is what the file holds.
        return TensorWrapper(getattr(blocks, cls)(2, 1, **kwargs)), "TensorWrapper: forward(x) = block(x)"

    return build


def dde_net(cls: str, *args):
    def build():
        dde = quiet_import("deepxde")
        net = getattr(dde.nn, cls)(*args)
        if cls == "DeepONet":
            return DeepXDEDeepONetWrapper(net), "DeepXDEDeepONetWrapper: (x[:, :4], x[:, 4:])"
        return net, None

    return build


def pina_model(cls: str, **options):
    def build():
        import pina.model as pm

        if cls == "MultiFeedForward":
            # abstract: the user defines forward, as in its docstring
            class TwoFeedForward(pm.MultiFeedForward):
                def forward(self, x):
                    return self.ffn1(x) + self.ffn2(x)

            ffn = {"input_dimensions": 2, "output_dimensions": 1, "inner_size": 16, "n_layers": 2}
            return TwoFeedForward({"ffn1": dict(ffn), "ffn2": dict(ffn)}), "subclass: forward = ffn1(x) + ffn2(x)"
        if cls == "DeepONet":
            branch = pm.FeedForward(input_dimensions=4, output_dimensions=16, inner_size=16, n_layers=2)
            trunk = pm.FeedForward(input_dimensions=2, output_dimensions=16, inner_size=16, n_layers=2)
            net = pm.DeepONet(
                branch_net=branch,
                trunk_net=trunk,
                input_indeces_branch_net=[0, 1, 2, 3],
                input_indeces_trunk_net=[4, 5],
            )
            return net, None
        return getattr(pm, cls)(**options), None

    return build


SYM = "physicsnemo.sym.models."
SYM_SIZE = {"layer_size": 16, "nr_layers": 2}
AXIS4 = ("axis", [0, 1, 2, 3])
DDE_INIT = "Glorot normal"

# (framework, pip name, import name, file stem, network description, builder, data: "heat"|"deeponet", steps)
NETWORKS = [
    ("physicsnemo", "nvidia-physicsnemo", "physicsnemo", "fullyconnected",
     "FullyConnected(layer_size=16, num_layers=3)", physicsnemo_fc(), "heat", STEPS),
    ("physicsnemo", "nvidia-physicsnemo", "physicsnemo", "fullyconnected-skip",
     "FullyConnected(layer_size=16, num_layers=3, skip_connections=True)",
     physicsnemo_fc(skip_connections=True), "heat", STEPS),
    ("physicsnemo", "nvidia-physicsnemo", "physicsnemo", "fullyconnected-weight-norm",
     "FullyConnected(layer_size=16, num_layers=3, weight_norm=True)",
     physicsnemo_fc(weight_norm=True), "heat", STEPS),
    ("physicsnemo", "nvidia-physicsnemo", "physicsnemo", "fullyconnected-weight-fact",
     "FullyConnected(layer_size=16, num_layers=3, weight_fact=True)",
     physicsnemo_fc(weight_fact=True), "heat", STEPS),
    ("physicsnemo", "nvidia-physicsnemo", "physicsnemo", "fullyconnected-adaptive",
     "FullyConnected(layer_size=16, num_layers=3, adaptive_activations=True)",
     physicsnemo_fc(adaptive_activations=True), "heat", STEPS),
    ("physicsnemo", "nvidia-physicsnemo", "physicsnemo", "fullyconnected-skip-6x256",
     "FullyConnected(layer_size=256, num_layers=6, activation_fn='silu', skip_connections=True)",
     physicsnemo_fc(_size={"layer_size": 256, "num_layers": 6}, activation_fn="silu", skip_connections=True),
     "heat", 100),
    # PhysicsNeMo-Sym: defaults except the sizes (weight_norm defaults to True in most of them);
    # Fourier frequencies ("axis", [0, 1, 2, 3]) instead of range(10) to keep the files small.
    ("physicsnemo-sym", "nvidia-physicsnemo-sym", "physicsnemo.sym", "fullyconnectedarch",
     "FullyConnectedArch(layer_size=16, nr_layers=2)",
     sym_arch(SYM + "fully_connected", "FullyConnectedArch", **SYM_SIZE), "heat", STEPS),
    ("physicsnemo-sym", "nvidia-physicsnemo-sym", "physicsnemo.sym", "fouriernetarch",
     "FourierNetArch(layer_size=16, nr_layers=2, frequencies=('axis', [0, 1, 2, 3]))",
     sym_arch(SYM + "fourier_net", "FourierNetArch", frequencies=AXIS4, **SYM_SIZE), "heat", STEPS),
    ("physicsnemo-sym", "nvidia-physicsnemo-sym", "physicsnemo.sym", "modifiedfouriernetarch",
     "ModifiedFourierNetArch(layer_size=16, nr_layers=2, frequencies=('axis', [0, 1, 2, 3]))",
     sym_arch(SYM + "modified_fourier_net", "ModifiedFourierNetArch", frequencies=AXIS4, **SYM_SIZE),
     "heat", STEPS),
    ("physicsnemo-sym", "nvidia-physicsnemo-sym", "physicsnemo.sym", "highwayfouriernetarch",
     "HighwayFourierNetArch(layer_size=16, nr_layers=2, frequencies=('axis', [0, 1, 2, 3]))",
     sym_arch(SYM + "highway_fourier_net", "HighwayFourierNetArch", frequencies=AXIS4, **SYM_SIZE),
     "heat", STEPS),
    ("physicsnemo-sym", "nvidia-physicsnemo-sym", "physicsnemo.sym", "multiplicativefilternetarch",
     "MultiplicativeFilterNetArch(layer_size=16, nr_layers=2)",
     sym_arch(SYM + "multiplicative_filter_net", "MultiplicativeFilterNetArch", **SYM_SIZE), "heat", STEPS),
    ("physicsnemo-sym", "nvidia-physicsnemo-sym", "physicsnemo.sym", "dgmarch",
     "DGMArch(layer_size=16, nr_layers=2)",
     sym_arch(SYM + "dgm", "DGMArch", **SYM_SIZE), "heat", STEPS),
    ("physicsnemo-sym", "nvidia-physicsnemo-sym", "physicsnemo.sym", "multiscalefouriernetarch",
     "MultiscaleFourierNetArch(layer_size=16, nr_layers=2, frequencies=(('axis', [0, 1, 2, 3]),))",
     sym_arch(SYM + "multiscale_fourier_net", "MultiscaleFourierNetArch", frequencies=(AXIS4,),
              frequencies_params=(AXIS4,), **SYM_SIZE), "heat", STEPS),
    ("physicsnemo-sym", "nvidia-physicsnemo-sym", "physicsnemo.sym", "sirenarch",
     "SirenArch(layer_size=16, nr_layers=2)",
     sym_arch(SYM + "siren", "SirenArch", **SYM_SIZE), "heat", STEPS),
    ("torchphysics", "torchphysics", "torchphysics", "fcn",
     "FCN(hidden=(16, 16, 16))", tp_model("FCN", hidden=(16, 16, 16)), "heat", STEPS),
    ("torchphysics", "torchphysics", "torchphysics", "fcn-adaptive",
     "FCN(hidden=(16, 16, 16), activations=AdaptiveActivationFunction(nn.Tanh()))",
     tp_model("FCN", adaptive=True, hidden=(16, 16, 16)), "heat", STEPS),
    ("torchphysics", "torchphysics", "torchphysics", "qres",
     "QRES(hidden=(16, 16))", tp_model("QRES", hidden=(16, 16)), "heat", STEPS),
    ("torchphysics", "torchphysics", "torchphysics", "harmonic-fcn",
     "Harmonic_FCN(max_frequenz=2, hidden=(16, 16, 16))",
     tp_model("Harmonic_FCN", max_frequenz=2, hidden=(16, 16, 16)), "heat", STEPS),
    ("torchphysics", "torchphysics", "torchphysics", "polynomial-fcn",
     "Polynomial_FCN(polynomial_degree=2, hidden=(16, 16))",
     tp_model("Polynomial_FCN", polynomial_degree=2, hidden=(16, 16)), "heat", STEPS),
    ("torchphysics", "torchphysics", "torchphysics", "deepritznet",
     "DeepRitzNet(width=16, depth=2)", tp_model("DeepRitzNet", width=16, depth=2), "heat", STEPS),
    # NeuroMANCER: defaults (slim.Linear, SoftExponential) except the sizes.
    # The default nonlin, SoftExponential, branches in Python on its parameter (`if alpha == 0.0`), which
    # torch.export cannot trace: those two are recorded as not exported; the Tanh ones are the PINN form.
    ("neuromancer", "neuromancer", "neuromancer", "mlp",
     "MLP(insize=2, outsize=1, hsizes=[16, 16], nonlin=nn.Tanh)",
     nm_block("MLP", hsizes=[16, 16], nonlin="Tanh"), "heat", STEPS),
    ("neuromancer", "neuromancer", "neuromancer", "mlp-softexp",
     "MLP(insize=2, outsize=1, hsizes=[16, 16]) (default nonlin=SoftExponential)",
     nm_block("MLP", hsizes=[16, 16]), "heat", STEPS),
    ("neuromancer", "neuromancer", "neuromancer", "resmlp",
     "ResMLP(insize=2, outsize=1, hsizes=[16, 16, 16], nonlin=nn.Tanh)",
     nm_block("ResMLP", hsizes=[16, 16, 16], nonlin="Tanh"), "heat", STEPS),
    ("neuromancer", "neuromancer", "neuromancer", "resmlp-softexp",
     "ResMLP(insize=2, outsize=1, hsizes=[16, 16, 16]) (default nonlin=SoftExponential)",
     nm_block("ResMLP", hsizes=[16, 16, 16]), "heat", STEPS),
    ("neuromancer", "neuromancer", "neuromancer", "stackedmlp",
     "StackedMLP(insize=2, outsize=1, h_sf_size=[16, 16], n_stacked_mf_layers=2, h_linear_sizes=[16], "
     "h_nonlinear_sizes=[16, 16])",
     nm_block("StackedMLP", h_sf_size=[16, 16], n_stacked_mf_layers=2, h_linear_sizes=[16],
              h_nonlinear_sizes=[16, 16]), "heat", STEPS),
    ("neuromancer", "neuromancer", "neuromancer", "kanblock",
     "KANBlock(insize=2, outsize=1, hsizes=[16], grid_sizes=[5])",
     nm_block("KANBlock", hsizes=[16], grid_sizes=[5]), "heat", STEPS),
    ("neuromancer", "neuromancer", "neuromancer", "basislinear",
     "BasisLinear(insize=2, outsize=1) (expand=Poly2())", nm_block("BasisLinear"), "heat", STEPS),
    ("deepxde", "deepxde", "deepxde", "fnn",
     "FNN([2, 16, 16, 16, 1], 'tanh', 'Glorot normal')",
     dde_net("FNN", [2, 16, 16, 16, 1], "tanh", DDE_INIT), "heat", STEPS),
    ("deepxde", "deepxde", "deepxde", "pfnn",
     "PFNN([2, 16, [8, 8], 16, 1], 'tanh', 'Glorot normal')",
     dde_net("PFNN", [2, 16, [8, 8], 16, 1], "tanh", DDE_INIT), "heat", STEPS),
    ("deepxde", "deepxde", "deepxde", "resnet",
     "ResNet(2, 1, 16, 2, 'tanh', 'Glorot normal')",
     dde_net("ResNet", 2, 1, 16, 2, "tanh", DDE_INIT), "heat", STEPS),
    ("deepxde", "deepxde", "deepxde", "msffn",
     "MsFFN([2, 16, 16, 1], 'tanh', 'Glorot normal', sigmas=[1, 10])",
     dde_net("MsFFN", [2, 16, 16, 1], "tanh", DDE_INIT, [1, 10]), "heat", STEPS),
    ("deepxde", "deepxde", "deepxde", "deeponet",
     "DeepONet([4, 16, 16], [2, 16, 16], 'tanh', 'Glorot normal')",
     dde_net("DeepONet", [4, 16, 16], [2, 16, 16], "tanh", DDE_INIT), "deeponet", STEPS),
    ("pina", "pina-mathlab", "pina", "feedforward",
     "FeedForward(input_dimensions=2, output_dimensions=1, inner_size=16, n_layers=3)",
     pina_model("FeedForward", input_dimensions=2, output_dimensions=1, inner_size=16, n_layers=3), "heat", STEPS),
    ("pina", "pina-mathlab", "pina", "residualfeedforward",
     "ResidualFeedForward(input_dimensions=2, output_dimensions=1, inner_size=16, n_layers=3)",
     pina_model("ResidualFeedForward", input_dimensions=2, output_dimensions=1, inner_size=16, n_layers=3),
     "heat", STEPS),
    ("pina", "pina-mathlab", "pina", "multifeedforward",
     "MultiFeedForward({'ffn1', 'ffn2': FeedForward(2, 1, inner_size=16, n_layers=2)}), forward = ffn1(x) + ffn2(x)",
     pina_model("MultiFeedForward"), "heat", STEPS),
    ("pina", "pina-mathlab", "pina", "piratenet",
     "PirateNet(input_dimension=2, inner_size=16, output_dimension=1, n_layers=2)",
     pina_model("PirateNet", input_dimension=2, inner_size=16, output_dimension=1, n_layers=2), "heat", STEPS),
    ("pina", "pina-mathlab", "pina", "kolmogorovarnoldnetwork",
     "KolmogorovArnoldNetwork(layers=[2, 8, 1], n_knots=6)",
     pina_model("KolmogorovArnoldNetwork", layers=[2, 8, 1], n_knots=6), "heat", STEPS),
    ("pina", "pina-mathlab", "pina", "deeponet",
     "DeepONet(branch FeedForward(4, 16, inner_size=16, n_layers=2), trunk FeedForward(2, 16, ...), "
     "indices [0, 1, 2, 3] / [4, 5])",
     pina_model("DeepONet"), "deeponet", STEPS),
]


# ------------------------------------------------------------------------------------- steps
def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def where(e: BaseException, module: str) -> str:
    """' [at pkg/file.py:line]': the framework's last frame in the traceback chain, where there is one."""
    part = "/" + module.replace(".", "/") + "/"
    found = None
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        for frame in traceback.extract_tb(e.__traceback__):
            if "site-packages" in frame.filename and part in frame.filename:
                found = frame
        e = e.__cause__ or e.__context__
    if found is None:
        return ""
    rel = found.filename[found.filename.index(part) + 1:]
    return f" [at {rel}:{found.lineno}: {(found.line or '').strip()[:80]}]"


def seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def train(model: nn.Module, x: torch.Tensor, u: torch.Tensor, steps: int) -> None:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.mean((model(x) - u) ** 2)
        loss.backward()
        opt.step()
    model.eval()


def r2(model: nn.Module, x: torch.Tensor, u: torch.Tensor) -> float:
    with torch.no_grad():
        pred = model(x)
    ss_res = torch.sum((pred - u) ** 2).item()
    ss_tot = torch.sum((u - u.mean()) ** 2).item()
    return 1.0 - ss_res / ss_tot


def export(model: nn.Module, x: torch.Tensor):
    return torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))


def graph_notes(ep) -> dict:
    """What a reader of the file meets: distinct ops, constants, buffers, output arity."""
    ops = sorted({str(n.target) for n in ep.graph.nodes if n.op == "call_function"})
    sig = ep.graph_signature
    outputs = next(n for n in ep.graph.nodes if n.op == "output").args[0]
    return {
        "ops": ops,
        "buffers": list(sig.buffers),
        "non_persistent_buffers": sorted(sig.non_persistent_buffers),
        "constants": sorted(ep.constants),
        "graph_outputs": len(outputs) if isinstance(outputs, (list, tuple)) else 1,
    }


def check_roundtrip(path: Path, model: nn.Module, x: torch.Tensor) -> tuple[bool, str]:
    rows = x[:5]
    loaded = torch.export.load(str(path)).module()
    with torch.no_grad():
        want = model(rows)
        got = loaded(rows)
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return False, f"load: output {type(got).__name__} {getattr(got, 'shape', '')} != {tuple(want.shape)}"
    diff = (got - want).abs().max().item()
    return diff <= 1e-5, f"load {'ok' if diff <= 1e-5 else 'MISMATCH'} maxdiff={diff:.1e}"


def build_one(spec, out: Path, data: dict) -> dict:
    framework, dist, module, stem, network, builder, kind, steps = spec
    x, u = data[kind], data["u"]
    name = f"{framework}-{stem}.pt2"
    path = out / name
    entry = {
        "file": None,
        "framework": framework,
        "package": version(dist),
        "network": network,
        "in_features": int(x.shape[1]),
        "out_features": 1,
        "params": None,
        "train_r2": None,
        "exported": False,
        "error": None,
        "wrapper": None,
        "graph": None,
        "roundtrip_ok": None,
    }
    if path.exists():
        path.unlink()  # never leave a stale file for a network that fails now
    stage = "import"
    try:
        quiet_import(module)
        stage = "build"
        seed_all(MODEL_SEED)
        with contextlib.redirect_stdout(io.StringIO()):
            model, wrapper = builder()
        entry["wrapper"] = wrapper
        entry["params"] = sum(p.numel() for p in model.parameters())
        stage = "train"
        train(model, x, u, steps)
        entry["train_r2"] = round(r2(model, x, u), 6)
        with torch.no_grad():
            y = model(x[:3])
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (3, 1):
            raise TypeError(f"forward returned {type(y).__name__} {getattr(y, 'shape', '')}, not (batch, 1)")
        stage = "export"
        ep = export(model, x)
        torch.export.save(ep, str(path))
        entry["file"] = name
        entry["exported"] = True
        entry["graph"] = graph_notes(ep)
        stage = "check"
        ok, note = check_roundtrip(path, model, x)
        entry["roundtrip_ok"] = ok
        size = f"{path.stat().st_size / 1024:.1f} KB"
        line = f"{name:55s} r2={entry['train_r2']:.4f} params={entry['params']} {size}, {note}"
    except Exception as e:  # one network's failure never stops the others
        entry["error"] = f"{stage}: {one_line(e)}{where(e, module)}"
        if os.environ.get("FIXTURES_TRACEBACK"):
            traceback.print_exc()
        line = f"{name:55s} NOT EXPORTED ({entry['error']})"
    print(line, flush=True)
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    parser.add_argument("--only", default="", help="comma-separated framework names to build (default: all)")
    parser.add_argument("--allow-other-torch", action="store_true", help=f"do not insist on torch {TORCH_VERSION}")
    parser.add_argument("--install", action="store_true",
                        help="install requirements.txt into this Python (torch pinned) and exit; builds nothing")
    args = parser.parse_args(argv)
    if args.install:
        return install()

    if not torch.__version__.startswith(TORCH_VERSION) and not args.allow_other_torch:
        print(f"torch {torch.__version__} found; the fixtures are built with torch {TORCH_VERSION}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # the same float sums on every machine
    args.out.mkdir(parents=True, exist_ok=True)
    import_torchvision()

    xt, xb, u = make_data(args.out)
    data = {"heat": xt, "deeponet": xb, "u": u}
    only = {f.strip() for f in args.only.split(",") if f.strip()}
    index_path = args.out / "index.json"
    kept = []
    if only and index_path.exists():  # a partial rebuild keeps the other frameworks' entries
        kept = [e for e in json.loads(index_path.read_text()) if e["framework"] not in only]
    entries = [build_one(spec, args.out, data) for spec in NETWORKS if not only or spec[0] in only]
    order = {(spec[0], spec[4]): i for i, spec in enumerate(NETWORKS)}
    index = sorted(kept + entries, key=lambda e: order.get((e["framework"], e["network"]), len(order)))
    index_path.write_text(json.dumps(index, indent=1) + "\n")
    print(f"{sum(e['exported'] for e in entries)}/{len(entries)} exported; index: {index_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
