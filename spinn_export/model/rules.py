"""How each ATen operation couples the channels of its operands: one rule per op, in one table.

A rule reads one node and tells the analysis (`groups.Coupler`) which channels of which axes must be removed
together (`couple`), which axes may not be pruned at all (`freeze`, naming the op and why), and, for ops whose
arguments name sizes (`view`, `split`, `slice`, ...), how to rewrite those arguments once channels are removed
(`resize`). An op with no rule freezes every axis it touches: the analysis fails closed, so an op it does not know
can never be pruned wrongly. Like Torch-Pruning's one pruning function per layer type, more rules can be registered
(`register`).

What "removing a channel" means, and why these rules are sound: a removed unit is zero everywhere, in every tensor
and every value that carries it. An element-wise op then computes the kept channels exactly as before; a sum over
a channel axis (a contraction in `linear`, `mm`, `einsum`, or `sum` itself, or a norm) loses only zero terms. A mean,
a maximum, a softmax or a normalisation over a channel axis would change, so those axes are frozen. The prune proof
(`prune.shrink.prove`) checks every pruned network against exactly this definition.
"""
from __future__ import annotations

import string
from collections.abc import Sequence

from spinn_export.model.coupling import Axis, Contraction, Coupler, Kept, Rule, Shapes, packet, tensor_args
from spinn_export.model.coupling import dim_of as _dim
from spinn_export.model.graph import Node, Ref
from spinn_export.model.layout import (
    concatenate,
    permute,
    reshape,
    resize_sizes,
    resize_slice,
    resize_split,
    slicing,
    split,
    sym_size,
)

RULES: dict[str, Rule] = {}


def register(packets: str | Sequence[str], rule: Rule) -> None:
    """Make `rule` the rule of each op packet (`"linear"`, `"add"`, ...): what a plug-in adds for its own ops."""
    for name in [packets] if isinstance(packets, str) else packets:
        RULES[name] = rule


def rule_of(op: str) -> Rule | None:
    return RULES.get(packet(op))


# ---------------------------------------------------------------------------------------------- element-wise


def pointwise(c: Coupler, node: Node) -> None:
    """Operands broadcast against the output, aligned from the right: a dimension of the output's length is coupled
    channel by channel; a dimension of length 1 is broadcast (the same value for every channel, which a prune keeps)."""
    out = node.outputs[0]
    rank = c.rank(out)
    for ref in tensor_args(node):
        shape = c.shape(ref)
        if shape is None:
            continue
        if len(shape) > rank:
            c.freeze_value(ref, f"{packet(node.op)} at node {node.name!r} has an operand above its output's rank")
            continue
        for dim in range(len(shape)):
            out_dim = dim + rank - len(shape)
            if shape[dim] == c.shape(out)[out_dim]:
                c.couple((ref, dim), (out, out_dim))


POINTWISE = (
    "tanh", "sigmoid", "relu", "gelu", "silu", "sin", "cos", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
    "neg", "abs", "sqrt", "rsqrt", "reciprocal", "square", "softplus", "elu", "selu", "celu", "leaky_relu", "hardtanh",
    "hardsigmoid", "hardswish", "mish", "erf", "erfc", "sign", "clamp", "clamp_min", "clamp_max", "relu6", "sinh",
    "cosh", "asinh", "acosh", "atanh", "atan", "asin", "acos", "tan", "pow", "alias", "clone", "detach", "_to_copy",
    "to", "lift_fresh_copy", "contiguous", "add", "sub", "mul", "div", "rsub", "maximum", "minimum", "fmod",
    "remainder", "atan2", "where", "addcmul", "addcdiv", "lerp", "logaddexp", "hypot", "sigmoid_backward", "floor",
    "ceil", "round", "trunc", "frac", "logit", "xlogy", "copysign", "eq", "ne", "lt", "le", "gt", "ge", "logical_not",
    "logical_and", "logical_or", "bitwise_not", "zeros_like", "ones_like", "full_like", "empty_like", "rand_like",
    "heaviside", "nan_to_num", "masked_fill", "type_as", "silu_", "relu_", "tanh_", "sigmoid_", "dropout",
    "feature_dropout", "alpha_dropout", "sinc", "special_erfcx", "softshrink", "hardshrink", "threshold",
    "_weight_norm", "_weight_norm_interface",  # v * g / |v| over every dimension but g's: a p-norm, zeros add nothing
)


# ---------------------------------------------------------------------------------------------- products


def linear(c: Coupler, node: Node) -> None:
    """y = x W^T + b: x's features are W's columns (a sum over them), y's features W's rows and b's entries."""
    x, weight, bias = node.args[0].name, node.args[1].name, node.arg(2)
    out, rank = node.outputs[0], c.rank(node.args[0].name)
    c.couple((x, rank - 1), (weight, 1))
    c.couple((out, rank - 1), (weight, 0))
    if isinstance(bias, Ref):
        c.couple((bias.name, 0), (weight, 0))
    for dim in range(rank - 1):
        c.couple((x, dim), (out, dim))


def _matmul_axes(c: Coupler, a: str, b: str, out: str) -> None:
    ra, rb, ro = c.rank(a), c.rank(b), c.rank(out)
    if ra == 1 and rb == 1:
        c.couple((a, 0), (b, 0))
        return
    if rb == 1:
        c.couple((a, ra - 1), (b, 0))
        for dim in range(ra - 1):
            c.couple((a, dim), (out, dim + ro - (ra - 1)))
        return
    if ra == 1:
        c.couple((a, 0), (b, rb - 2))
        c.couple((b, rb - 1), (out, ro - 1))
        for dim in range(rb - 2):
            c.couple((b, dim), (out, dim + ro - 1 - (rb - 2)))
        return
    c.couple((a, ra - 1), (b, rb - 2))
    c.couple((a, ra - 2), (out, ro - 2))
    c.couple((b, rb - 1), (out, ro - 1))
    for operand, rank in ((a, ra), (b, rb)):
        for dim in range(rank - 2):
            if c.shape(operand)[dim] == c.shape(out)[dim + ro - rank]:
                c.couple((operand, dim), (out, dim + ro - rank))


def matmul(c: Coupler, node: Node) -> None:
    """A product of two operands, activations or weights alike: the contracted axes are one (a sum over them), the
    others are the output's."""
    a, b = tensor_args(node)[-2:]
    _matmul_axes(c, a, b, node.outputs[0])


def addmm(c: Coupler, node: Node) -> None:
    """bias + a @ b: the product's rule, and the bias broadcast against the output."""
    bias, a, b = tensor_args(node)[:3]
    _matmul_axes(c, a, b, node.outputs[0])
    shape, out = c.shape(bias), c.shape(node.outputs[0])
    if shape is not None and out is not None:
        for dim in range(len(shape)):
            if shape[dim] == out[dim + len(out) - len(shape)]:
                c.couple((bias, dim), (node.outputs[0], dim + len(out) - len(shape)))


def einsum(c: Coupler, node: Node) -> None:
    """Every axis named by the same letter is one axis; letters summed away are contractions (sums)."""
    equation = str(node.args[0]).replace(" ", "")
    operands = tensor_args(node)
    inputs, _, output = equation.partition("->")
    terms = inputs.split(",")
    if "." in equation or "->" not in equation or len(terms) != len(operands):
        c.freeze_node(node, "an einsum with '...' or an implicit output")
        return
    seen: dict[str, tuple[str, int]] = {}
    for letters, operand in [*zip(terms, operands), (output, node.outputs[0])]:
        if len(letters) != c.rank(operand) or any(letter not in string.ascii_letters for letter in letters):
            c.freeze_node(node, f"an einsum equation {equation!r} that does not match its operands")
            return
        for dim, letter in enumerate(letters):
            if c.shape(operand)[dim] == 1 and letter in seen and c.shape(seen[letter][0])[seen[letter][1]] != 1:
                continue  # broadcast
            if letter in seen:
                c.couple(seen[letter], (operand, dim))
            else:
                seen[letter] = (operand, dim)


# ---------------------------------------------------------------------------------------------- contractions' FLOPs


def _last(value: str, shapes: Shapes) -> Axis:
    return value, len(shapes[value]) - 1


def linear_contraction(node: Node, shapes: Shapes) -> Contraction:
    return Contraction((_last(node.args[0].name, shapes),), isinstance(node.arg(2), Ref))


def matmul_contraction(node: Node, shapes: Shapes) -> Contraction:
    return Contraction((_last(tensor_args(node)[-2], shapes),))


def addmm_contraction(node: Node, shapes: Shapes) -> Contraction:
    return Contraction((_last(tensor_args(node)[1], shapes),), True)


def einsum_contraction(node: Node, shapes: Shapes) -> Contraction:
    """The letters of the inputs that the output does not keep; `...` stands for the operands' leading axes,
    aligned from the right as broadcasting aligns them, and an implicit output keeps the letters used once."""
    operands = tensor_args(node)
    inputs, arrow, output = str(node.args[0]).replace(" ", "").partition("->")
    terms = inputs.split(",")
    letters = [_spelled(term, len(shapes[operand])) for term, operand in zip(terms, operands)]
    if arrow:
        kept = set(_spelled(output, len(shapes[node.outputs[0]])))
    else:
        used = [letter for term in letters for letter in term]
        kept = {letter for letter in used if used.count(letter) == 1}
    summed: dict[str, Axis] = {}
    for term, operand in zip(letters, operands):
        for dim, letter in enumerate(term):
            if letter not in kept and letter not in summed and shapes[operand][dim] != 1:
                summed[letter] = (operand, dim)
    return Contraction(tuple(summed.values()))


def _spelled(term: str, rank: int) -> str:
    """`term` with `...` written out as one upper-case letter per axis it covers (Z for the last of them)."""
    if "..." not in term:
        return term
    head, _, tail = term.partition("...")
    covered = rank - len(head) - len(tail)
    return head + string.ascii_uppercase[26 - covered:] + tail


# ---------------------------------------------------------------------------------------------- reductions

SOUND_REDUCTIONS = ("sum", "linalg_vector_norm", "norm", "nansum")  # a zero term changes none of these


def _reduced(node: Node, rank: int) -> set[int]:
    dims = node.arg(1) if packet(node.op) != "linalg_vector_norm" else node.arg(2)
    if packet(node.op) == "norm" and len(node.args) > 2:
        dims = node.arg(2)
    if dims is None or dims == ():
        return set(range(rank))
    return {_dim(d, rank) for d in (dims if isinstance(dims, tuple) else (dims,))}


def reduction(c: Coupler, node: Node) -> None:
    """Kept axes pass through; a reduced channel axis is fine for a sum (or a p-norm: zeros add nothing) and is
    frozen for a mean, a maximum, a product or a variance, which a removed channel would change."""
    source, out = node.args[0].name, node.outputs[0]
    name = packet(node.op)
    rank = c.rank(source)
    if name == "linalg_vector_norm" and not (isinstance(node.arg(1), (int, float)) and node.arg(1) > 0):
        c.freeze_node(node, "takes a norm that zeros change")
        return
    reduced = _reduced(node, rank)
    keepdim = c.rank(out) == rank
    position = 0
    for dim in range(rank):
        if dim in reduced:
            if name not in SOUND_REDUCTIONS and not c.is_batch((source, dim)):
                c.freeze((source, dim), f"{name} at node {node.name!r} reduces over the features")
            if keepdim:
                position += 1
            continue
        c.couple((source, dim), (out, position))
        position += 1


def softmax(c: Coupler, node: Node) -> None:
    """Softmax mixes the channels of its axis (a removed one would still take a share): that axis is frozen."""
    source, out = node.args[0].name, node.outputs[0]
    rank = c.rank(source)
    dim = _dim(node.arg(1), rank)
    for d in range(rank):
        c.couple((source, d), (out, d))
    if not c.is_batch((source, dim)):
        c.freeze((source, dim), f"{packet(node.op)} at node {node.name!r} mixes the features")


# ---------------------------------------------------------------------------------------------- per channel


def batch_norm(c: Coupler, node: Node) -> None:
    """Batch norm in eval mode is per channel (dimension 1): its weight, bias and running statistics are sliced with
    the channels (a removed channel is zero throughout: (0 - 0) / sqrt(0 + eps) * 0 + 0 = 0)."""
    source, out = node.args[0].name, node.outputs[0]
    for dim in range(c.rank(source)):
        c.couple((source, dim), (out, dim))
    for arg in node.args[1:5]:
        if isinstance(arg, Ref) and c.shape(arg.name) is not None:
            c.couple((arg.name, 0), (source, 1 if c.rank(source) > 1 else 0))


def prelu(c: Coupler, node: Node) -> None:
    """PReLU's slopes, one per channel of dimension 1 (or one shared: broadcast)."""
    source, weight, out = node.args[0].name, node.args[1].name, node.outputs[0]
    for dim in range(c.rank(source)):
        c.couple((source, dim), (out, dim))
    channel = 1 if c.rank(source) > 1 else 0
    if c.shape(weight) and c.shape(weight)[0] == c.shape(source)[channel]:
        c.couple((weight, 0), (source, channel))


def glu(c: Coupler, node: Node) -> None:
    """GLU: the output's channel k is the first half's k times sigmoid of the second half's k: the two halves pair."""
    source, out = node.args[0].name, node.outputs[0]
    rank = c.rank(source)
    dim = _dim(node.arg(1) if node.arg(1) is not None else -1, rank)
    half = c.shape(out)[dim]
    for d in range(rank):
        if d != dim:
            c.couple((source, d), (out, d))
    c.couple((out, dim), (source, dim), 0)
    c.couple((out, dim), (source, dim), half)


for _names, _rule in (
    (POINTWISE, Rule(pointwise)),
    (("linear",), Rule(linear, contraction=linear_contraction)),
    (("mm", "matmul", "bmm"), Rule(matmul, contraction=matmul_contraction)),
    (("addmm",), Rule(addmm, contraction=addmm_contraction)),
    (("einsum",), Rule(einsum, contraction=einsum_contraction)),
    (("t", "numpy_T", "transpose", "permute"), Rule(permute)),
    (("view", "reshape", "_unsafe_view", "expand", "squeeze", "unsqueeze", "flatten", "unflatten"),
     Rule(reshape, resize_sizes)),
    (("cat", "concat", "concatenate"), Rule(concatenate)),
    (("split", "split_with_sizes", "chunk"), Rule(split, resize_split)),
    (("slice",), Rule(slicing, resize_slice)),
    (("sym_size",), Rule(sym_size)),
    (("sum", "mean", "amax", "amin", "max", "min", "prod", "var", "std", "logsumexp", "linalg_vector_norm",
      "norm", "nansum", "nanmean", "var_mean", "std_mean"), Rule(reduction)),
    (("softmax", "_softmax", "log_softmax", "_log_softmax"), Rule(softmax)),
    (("_native_batch_norm_legit_no_training", "native_batch_norm", "batch_norm"), Rule(batch_norm)),
    (("prelu", "_prelu_kernel"), Rule(prelu)),
    (("glu",), Rule(glu)),
):
    register(_names, _rule)



def resized(nodes: Sequence[Node], kept: Kept) -> tuple[Node, ...]:
    """The nodes with every size argument rewritten for the kept channels (ops that name no sizes unchanged)."""
    found = []
    for node in nodes:
        rule = rule_of(node.op)
        found.append(rule.resize(node, kept) if rule is not None and rule.resize is not None else node)
    return tuple(found)
