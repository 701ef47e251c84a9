"""Latency targets and --round-to auto: the solver, the table's cache, the end-to-end checks and the history, on a
synthetic measurer (deterministic costs, no timing); one smoke test times real probes on eager-cpu."""
import json
import math

import pytest
import torch

from spinn_export.bench.measurer import BackendMeasurer
from spinn_export.cli import main
from spinn_export.defaults import PROBE_ANCHOR
from spinn_export.errors import UserError
from spinn_export.model.checkpoint import save_checkpoint
from spinn_export.model.mlp import architecture_of, mlp_network
from spinn_export.model.spec import MLPSpec
from spinn_export.prune.budget import plan_widths
from spinn_export.prune.config import PruneConfig
from spinn_export.prune.latency import (
    AUTO,
    TOLERANCE,
    Cost,
    LatencyLookup,
    Ratio,
    auto_round_to,
    efficient_multiple,
    plan_latency,
)
from spinn_export.prune.structured import prune
from spinn_export.prune.target import Target
from spinn_export.task.data import builtin_dataset
from spinn_export.task.train import TrainConfig

SPEC = MLPSpec(18, (96, 96, 64), 2)
ARCH = architecture_of(SPEC)


def arch(*args):
    return architecture_of(MLPSpec(*args))


def layer_cost(k: int, n: int, tile: int) -> float:
    """A staircase: a layer pays for whole tiles of its input and output widths, plus a per-call overhead."""
    return math.ceil(n / tile) * tile * (math.ceil(k / tile) * tile + 8) + 500.0


class FakeMeasurer:
    """Deterministic costs from `layer_cost`; whole models measure `bias` x the sum of their layers (what a table of
    layers misses), so the end-to-end checks have something to correct."""

    def __init__(self, tile: int = 16, bias: float = 1.0, version: str = "1") -> None:
        self.tile, self.bias, self.version = tile, bias, version
        self.measured: list[list[tuple[int, int]]] = []
        self.ratios: list[tuple[tuple[int, ...], bool]] = []

    def key(self):
        return {"backend": "fake", "batch": 64, "threads": 1, "versions": {"lib": self.version}}

    def costs(self, shapes, out_features, activation):
        self.measured.append(list(shapes))
        anchor = layer_cost(*PROBE_ANCHOR, self.tile)
        return {s: Cost(layer_cost(*s, self.tile) / anchor, 0.99 * layer_cost(*s, self.tile) / anchor,
                        1.01 * layer_cost(*s, self.tile) / anchor, 1e-6 * layer_cost(*s, self.tile)) for s in shapes}

    def model_cost(self, architecture) -> float:
        return sum(layer_cost(k, n, self.tile) for n, k in architecture.layer_shapes[:-1])

    def release(self):
        pass

    def ratio(self, baseline, candidate, final):
        self.ratios.append((candidate.architecture.widths, final))
        r = min(0.99, self.bias * self.model_cost(candidate.architecture) / self.model_cost(baseline.architecture))
        return Ratio(r, 0.97 * r, 1.03 * r, "abba", 4 if final else 2, 64)


class SumTable:
    """A LatencyEstimator from a cost function of the layer shapes, counting the vectors it is asked for."""

    def __init__(self, architecture, cost) -> None:
        self.architecture, self.cost, self.asked = architecture, cost, 0

    def latency(self, vectors):
        self.asked += 1
        return [sum(self.cost(k, n) for n, k in self.architecture.layer_shapes_at(v)[:-1]) for v in vectors]


def test_latency_target_is_validated_and_described():
    target = Target.latency(0.4, "ort-cpu", 4096)
    assert target.kind == "latency" and target.latency_ratio == 0.4
    assert target.to_dict() == {"kind": "latency", "latency_ratio": 0.4, "backend": "ort-cpu", "batch": 4096}
    assert target.describe() == "40.00% of dense latency on ort-cpu at batch 4096 (2.50x faster)"
    for ratio in (0.0, 1.0, 1.5, -0.2, float("nan")):
        with pytest.raises(UserError, match="strictly between 0 and 1"):
            Target.latency(ratio, "ort-cpu", 4096)
    with pytest.raises(UserError, match="--batch"):
        Target.latency(0.4, "ort-cpu", 0)


@pytest.mark.parametrize("mode", ["uniform", "global"])
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_solver_meets_the_budget_on_a_synthetic_table(mode, ratio):
    table = SumTable(ARCH, lambda k, n: layer_cost(k, n, 16))
    scores = [torch.linspace(1.0, 2.0, w) for w in SPEC.widths]
    plan = plan_widths(ARCH, Target.latency(ratio, "fake", 64), mode=mode, scores=scores, round_to=(8, 8, 16),
                       latency=table)
    full, got = table.latency([SPEC.widths, plan.widths])
    assert [w % step for w, step in zip(plan.widths, (8, 8, 16))] == [0, 0, 0]
    worst_step = max(full - table.latency([[w - 16 if i == j else w for j, w in enumerate(SPEC.widths)]])[0]
                     for i in range(len(SPEC.widths)))
    assert 0 <= ratio * full - got <= worst_step  # within the budget, by less than one block's worth
    assert plan.target.kind == "latency" and plan.target_value is None


def test_global_mode_prunes_where_importance_per_latency_is_lowest():
    spec = arch(18, (64, 64), 2)
    # The first hidden layer is five times as costly per neuron as the second, its neurons equally important:
    # a latency-aware global plan takes more from the first.
    table = SumTable(spec, lambda k, n: n * (5.0 if k == 18 else 1.0) * 100 + k * n)
    scores = [torch.ones(64), torch.ones(64)]
    plan = plan_widths(spec, Target.latency(0.5, "fake", 64), mode="global", scores=scores, round_to=8, latency=table)
    assert plan.widths[0] < plan.widths[1]


def test_uniform_walk_reads_the_table_in_few_requests():
    table = SumTable(ARCH, lambda k, n: layer_cost(k, n, 8))
    plan_widths(ARCH, Target.latency(0.3, "fake", 64), round_to=8, latency=table)
    steps_walked = sum((w - 8) // 8 for w in SPEC.widths)
    assert table.asked < steps_walked / 4


def test_a_budget_below_the_smallest_widths_is_one_line_with_the_range():
    table = SumTable(ARCH, lambda k, n: layer_cost(k, n, 16) + 1e6)  # a large fixed cost per layer
    with pytest.raises(UserError) as error:
        plan_widths(ARCH, Target.latency(0.2, "fake", 64), round_to=8, latency=table)
    message = str(error.value)
    assert "\n" not in message and "achievable range is 0." in message and "to 1" in message


def test_table_is_cached_per_key_and_remeasured_when_the_key_changes(tmp_path):
    measurer = FakeMeasurer()
    lookup = LatencyLookup(measurer, ARCH, tmp_path)
    first = lookup.latency([SPEC.widths, (48, 48, 32)])
    assert len(measurer.measured) == 1 and len(measurer.measured[0]) == 6  # one chunk for both vectors
    assert lookup.path.is_file() and lookup.path.parent == tmp_path
    saved = json.loads(lookup.path.read_text())
    assert saved["key"]["versions"] == {"lib": "1"} and len(saved["entries"]) == 6

    again = FakeMeasurer()
    assert LatencyLookup(again, ARCH, tmp_path).latency([SPEC.widths, (48, 48, 32)]) == first
    assert again.measured == []  # read from the cache

    upgraded = FakeMeasurer(version="2")
    lookup2 = LatencyLookup(upgraded, ARCH, tmp_path)
    lookup2.latency([SPEC.widths])
    assert lookup2.path != lookup.path and len(upgraded.measured) == 1
    other_model = arch(18, (96, 96, 64), 3)  # another output width: another table
    assert LatencyLookup(FakeMeasurer(), other_model, tmp_path).path not in (lookup.path, lookup2.path)

    lookup.path.write_text("{not json")
    broken = FakeMeasurer()
    assert LatencyLookup(broken, ARCH, tmp_path).latency([SPEC.widths]) == first[:1]
    assert len(broken.measured) == 1  # an unreadable file is measured afresh (and rewritten)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_checks_correct_a_biased_table_and_the_plan_is_reused(tmp_path):
    measurer = FakeMeasurer(bias=1.3)
    target = Target.latency(0.5, "fake", 64)
    result = plan_latency(LatencyLookup(measurer, ARCH, tmp_path), mlp_network(SPEC), target, round_to=8,
                          log=lambda _: None)
    assert len(result.checks) >= 2 and result.checks[0].goal == 0.5 and result.checks[1].goal < 0.5
    assert result.checks[0].measured.ratio > 0.5 * (1 + TOLERANCE)  # the bias: the table alone misses
    assert result.factor == pytest.approx(1.3, rel=0.02)  # the fake's bias, up to its cap below 1
    assert abs(result.predicted / 0.5 - 1) <= 0.1
    truth = measurer.bias * measurer.model_cost(result.plan.architecture) / measurer.model_cost(ARCH)
    assert abs(truth / 0.5 - 1) <= 0.1
    assert result.plan.target == target and not result.reused
    assert all(not final for _, final in measurer.ratios)

    again = FakeMeasurer(bias=1.3)
    reused = plan_latency(LatencyLookup(again, ARCH, tmp_path), mlp_network(SPEC), target, round_to=8,
                          log=lambda _: None)
    assert reused.reused and reused.plan.widths == result.plan.widths and reused.checks == result.checks
    assert reused.factor == result.factor and reused.estimate == result.estimate
    assert again.measured == [] and again.ratios == []


@pytest.mark.parametrize("tile,expected", [(16, 16), (32, 32), (1, 8), (64, 32)])
def test_efficient_multiple_reads_the_staircase(tile, expected):
    costs = {n: float(math.ceil(n / tile) * tile) for n in range(192, 321, 8)}
    assert efficient_multiple(costs, 512) == expected
    assert efficient_multiple(costs, 20) in (8, 16)  # never wider than the layer


def test_auto_round_to_picks_each_layers_multiple_from_the_table(tmp_path):
    lookup = LatencyLookup(FakeMeasurer(tile=16), arch(18, (256, 256, 128), 2), tmp_path)
    assert auto_round_to(lookup, lookup.architecture, Target.params(0.5)) == (16, 16, 16)
    coarse = LatencyLookup(FakeMeasurer(tile=32), lookup.architecture, tmp_path / "coarse")
    assert auto_round_to(coarse, coarse.architecture, Target.latency(0.5, "fake", 64)) == (32, 32, 32)
    smooth = LatencyLookup(FakeMeasurer(tile=1), lookup.architecture, tmp_path / "smooth")
    assert auto_round_to(smooth, smooth.architecture, Target.params(0.5)) == (8, 8, 8)


def test_auto_round_to_is_never_slower_than_the_coarsest_multiple_at_an_equal_budget(tmp_path):
    # One layer of 64: a 31 % parameter cut wants 44 neurons; in blocks of 16 the plan lands on 48 (above the budget,
    # slower), in blocks of 32 on 32. The table's staircase says 16 pays, but that plan is slower: 32 is kept.
    spec = arch(18, (64,), 2)
    lookup = LatencyLookup(FakeMeasurer(tile=16), spec, tmp_path)
    assert plan_widths(spec, Target.params(0.312), round_to=16).widths == (48,)
    assert auto_round_to(lookup, spec, Target.params(0.312)) == (32,)
    with pytest.raises(UserError, match="widths gives the widths"):
        PruneConfig(Target.of_widths((32,)), round_to=AUTO)


@pytest.fixture(scope="module")
def data():
    return builtin_dataset(seed=0, n_train=256, n_val=128, n_test=32)


def test_prune_to_a_latency_target_records_target_and_achieved(tmp_path, data, monkeypatch):
    monkeypatch.setenv("SPINN_EXPORT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    network = mlp_network(SPEC)
    measurer = FakeMeasurer(bias=1.1)
    config = PruneConfig(Target.latency(0.5, "fake", 64), rounds=2, finetune=TrainConfig(epochs=0),
                         calibration_samples=64, round_to=AUTO)
    result = prune(network, data, config, tmp_path / "out", progress=False, measurer=measurer)
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    target, achieved = history["target"], history["achieved"]
    assert target["kind"] == "latency" and target["latency_ratio"] == 0.5
    assert target["backend"] == "fake" and target["batch"] == 64
    assert target["round_to"] == [16, 16, 16]  # the fake's tile
    assert target["planned_widths"] == achieved["widths"] == list(result.network.architecture.widths)
    assert target["latency"]["checks"] and target["latency"]["table"].startswith(str(tmp_path / "cache"))
    latency = achieved["latency"]
    assert achieved["latency_ratio"] == latency["ratio"] == result.achieved_latency.ratio
    assert latency["ci_low"] <= latency["ratio"] <= latency["ci_high"]
    assert latency["backend"] == "fake" and latency["batch"] == 64 and latency["method"] == "abba"
    assert measurer.ratios[-1] == (result.network.architecture.widths, True)  # measured in full
    assert history["config"]["round_to"] == AUTO and "backend" not in history["config"]

    magnitude = prune(network, data, PruneConfig(config.target, method="magnitude", rounds=1,
                                                     finetune=TrainConfig(epochs=0), round_to=AUTO),
                      tmp_path / "mag", progress=False, measurer=FakeMeasurer(bias=1.1))
    assert magnitude.latency.reused and magnitude.target_nonzero == result.plan.params
    assert magnitude.achieved_latency is None


def test_an_unreachable_latency_target_writes_nothing(tmp_path, data, monkeypatch):
    monkeypatch.setenv("SPINN_EXPORT_CACHE", str(tmp_path / "cache"))
    config = PruneConfig(Target.latency(0.01, "fake", 64), finetune=TrainConfig(epochs=0))
    with pytest.raises(UserError, match="achievable range"):
        prune(mlp_network(SPEC), data, config, tmp_path / "out", progress=False, measurer=FakeMeasurer())
    assert not (tmp_path / "out").exists()


def test_config_errors():
    with pytest.raises(UserError, match="apply only with"):
        PruneConfig(Target.params(0.5), backend="ort-cpu")
    with pytest.raises(UserError, match="disagree"):
        PruneConfig(Target.latency(0.5, "ort-cpu", 4096), batch=8192)
    with pytest.raises(UserError, match="round_to must be a positive integer"):
        PruneConfig(Target.params(0.5), round_to="sometimes")
    assert PruneConfig(Target.params(0.5), round_to=AUTO).measured_on == ("ort-cpu", 4096)


@pytest.mark.parametrize("args,needle", [
    (["--target-latency", "1.5"], "strictly between 0 and 1"),
    (["--target-latency", "0.4", "--backend", "no-such-backend"], "unknown backend"),
    (["--target-latency", "0.4", "--method", "magnitude"], "magnitude cannot meet --target-latency"),
    (["--target", "0.5", "--batch", "64"], "apply only with"),
])
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, needle):
    spec = MLPSpec(18, (16, 16), 2)
    save_checkpoint(tmp_path / "m.safetensors", mlp_network(spec), {"variant": "dense"})
    code = main(["prune", str(tmp_path / "m.safetensors"), *args, "--out", str(tmp_path / "out")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "out").exists()


def test_real_probes_on_eager_cpu(tmp_path):
    """The worker path for real: probes timed against the anchor, entries with ordered CIs, the cache written."""
    with BackendMeasurer("eager-cpu", 32, threads=1) as measurer:
        lookup = LatencyLookup(measurer, arch(4, (16, 8), 2), tmp_path)
        full, half = lookup.latency([(16, 8), (8, 8)])
    assert full > 0 and half > 0 and lookup.measured == 4
    for cost in lookup.table.costs.values():
        assert 0 < cost.ci_low <= cost.ratio <= cost.ci_high and cost.seconds > 0
    assert json.loads(lookup.path.read_text())["key"]["backend"] == "eager-cpu"


def test_the_main_job_passes_latency_budgets_to_both_prune_stages_and_names_them_once():
    from spinn_export.cli import budget_of, build_parser
    from spinn_export.pipeline.config import RunConfig

    config = RunConfig(target=Target.latency(0.4, "ort-cpu", 4096), round_to=AUTO)
    assert config.prune("structured").measured_on == config.prune("magnitude").measured_on == ("ort-cpu", 4096)
    words = config.command.split()
    assert words.count("--backend") == 1 and words[words.index("--round-to") + 1] == AUTO
    args = build_parser().parse_args(words[1:])
    assert budget_of(args) == config.target and args.round_to == AUTO
    auto = RunConfig(round_to=AUTO, batch=8192)
    assert auto.prune("structured").measured_on == ("ort-cpu", 8192) and "--batch 8192" in auto.command
    assert "backend" not in RunConfig().prune("structured").to_dict()  # records of other runs stay as they were
