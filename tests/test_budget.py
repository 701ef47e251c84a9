import itertools
import math

import pytest
import torch

from spinn_export.cli import user_message
from spinn_export.errors import UserError
from spinn_export.model.mlp import architecture_of
from spinn_export.model.spec import SPINN_REFERENCE, MLPSpec
from spinn_export.prune.budget import plan_widths, round_targets
from spinn_export.prune.target import Target

REFERENCE = architecture_of(SPINN_REFERENCE)


def _neuron_worth(spec: MLPSpec, kind: str = "params") -> int:
    """The most one neuron of any hidden layer is worth at these widths, computed from the spec."""
    def count(s: MLPSpec) -> int:
        return s.params if kind == "params" else s.flops_per_sample

    worths = []
    for index in range(len(spec.widths)):
        smaller = list(spec.widths)
        smaller[index] -= 1
        worths.append(count(spec) - count(spec.with_widths(smaller)))
    return max(worths)


def test_reference_uniform_plan_at_68_5_percent():
    plan = plan_widths(REFERENCE, 0.685, mode="uniform")
    target_params = (1 - 0.685) * 666_882
    # Continuous uniform fraction f: 655360 f^2 + 11520 f + 2 = target (the spec's exact count).
    f = (-11520 + math.sqrt(11520**2 - 4 * 655360 * (2 - target_params))) / (2 * 655360)
    assert [round(512 * f)] * 3 + [round(256 * f)] == [285, 285, 285, 143]
    for width, base in zip(plan.widths, SPINN_REFERENCE.widths):
        assert abs(width - base * f) <= 1
    # The "about [287, 287, 287, 144]" is sqrt(0.315) of each width (it ignores biases and the
    # 18/2-wide ends); it misses 68.5 % by more than a neuron, so the solver lands a little lower.
    assert all(abs(a - b) <= 3 for a, b in zip(plan.widths, (287, 287, 287, 144)))
    assert SPINN_REFERENCE.with_widths((287, 287, 287, 144)).params - target_params > _neuron_worth(plan.architecture)
    assert abs(plan.params - target_params) <= _neuron_worth(plan.architecture)
    summary = plan.to_dict()
    assert summary["target"] == {"kind": "params", "reduction": 0.685}
    assert summary["target_value"] == round(target_params)
    assert summary["params_reduction"] == pytest.approx(0.685, abs=0.001)
    assert "68.50%" in plan.describe() and str(list(plan.widths)) in plan.describe()


@pytest.mark.parametrize("reduction", [0.1, 0.5, 0.9])
def test_flop_targets_land_within_one_neuron(reduction):
    plan = plan_widths(REFERENCE, Target.flops(reduction))
    goal = (1 - reduction) * SPINN_REFERENCE.flops_per_sample
    assert abs(plan.flops_per_sample - goal) <= _neuron_worth(plan.architecture, "flops")
    assert plan.flops_reduction == pytest.approx(reduction, abs=0.002)
    assert plan.architecture.in_features == 18 and plan.architecture.out_features == 2


@pytest.mark.parametrize("round_to", [8, 16, 32])
def test_round_to_gives_multiples_within_one_block(round_to):
    plan = plan_widths(REFERENCE, 0.685, round_to=round_to)
    assert all(w % round_to == 0 for w in plan.widths)
    assert abs(plan.params - 0.315 * 666_882) <= round_to * _neuron_worth(plan.architecture)


def test_global_mode_removes_the_lowest_scores_first_and_respects_min_width():
    spec = architecture_of(MLPSpec(4, (10, 10, 10), 3))
    low, high = torch.full((10,), 0.01), torch.full((10,), 1.0)
    plan = plan_widths(spec, 0.3, mode="global", scores=[high, low, high])
    assert plan.widths[0] == plan.widths[2] == 10 and plan.widths[1] < 10
    floor = plan_widths(spec, 0.6, mode="global", scores=[high, low, high], min_width=3)
    assert floor.widths[1] == 3 and min(floor.widths) >= 3
    assert abs(floor.params - 0.4 * spec.params) <= _neuron_worth(floor.architecture)


def test_explicit_widths_and_baseline_relative_rounds():
    plan = plan_widths(REFERENCE, Target.of_widths((256, 256, 256, 128)))
    assert plan.widths == (256, 256, 256, 128) and plan.target_value is None
    targets = round_targets(REFERENCE, Target.params(0.685), 3)
    keeps = [1 - t.reduction for t in targets]
    assert keeps[0] == pytest.approx(keeps[1] / keeps[0]) == pytest.approx(keeps[2] / keeps[1])
    assert targets[-1] == Target.params(0.685)
    # a later round plans a pruned model against the original baseline
    first = plan_widths(REFERENCE, targets[0])
    second = plan_widths(first.architecture, targets[1], baseline=REFERENCE)
    assert second.params_reduction == pytest.approx(targets[1].reduction, abs=0.002)
    steps = round_targets(REFERENCE, Target.of_widths((128, 128, 128, 64)), 3, round_to=16)
    widths = [SPINN_REFERENCE.widths] + [t.widths for t in steps]
    assert all(all(a >= b for a, b in zip(w0, w1)) for w0, w1 in itertools.pairwise(widths))
    assert all(w % 16 == 0 for t in steps for w in t.widths)


@pytest.mark.parametrize("reduction", [1.0, 1.5, 0.0, -0.2, float("nan")])
def test_impossible_fractions_are_user_errors(reduction):
    with pytest.raises(UserError, match="impossible"):
        plan_widths(REFERENCE, reduction)


def test_budget_errors_name_the_problem():
    small = architecture_of(MLPSpec(18, (32, 24, 16), 2))
    with pytest.raises(UserError, match="minimum width"):
        plan_widths(small, 0.9, min_width=12)
    with pytest.raises(UserError, match="round_to 32 cannot be met") as info:
        plan_widths(small, 0.5, round_to=32)
    assert user_message(info.value).startswith("--round-to 32 cannot be met")  # the CLI names its flags
    with pytest.raises(UserError, match="cannot be met"):
        plan_widths(small, Target.of_widths((16, 16, 12)), round_to=8)
    with pytest.raises(UserError, match="cannot grow"):
        plan_widths(small, Target.of_widths((40, 16, 8)))
    with pytest.raises(UserError, match="hidden layers"):
        plan_widths(small, Target.of_widths((16, 16)))
    with pytest.raises(UserError, match="minimum width"):
        plan_widths(small, Target.of_widths((16, 16, 2)), min_width=4)
    with pytest.raises(UserError, match="min_width 20 is wider than hidden layer 2"):
        plan_widths(small, 0.5, min_width=20)
