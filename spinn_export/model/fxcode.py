"""The forward code of a module built from a graph, where torch.fx would write it wrong.

torch.fx writes a `get_attr` node as `self.a.b` (or `getattr(self.a, "b")` for a part that is no identifier, such as
a ModuleList index). A part that is a Python keyword (`nn.ModuleDict({"in": ...})` gives `layers.in.weight`) it
writes as `self.layers.in.weight`, a SyntaxError. Renaming the attribute would change the state_dict's keys, which
must stay the user's names; so exactly those lines of the code are written with `getattr` instead.
"""
from __future__ import annotations

import keyword
import re
from typing import Any

import torch


def fx_writes(part: str) -> bool:
    """Whether torch.fx writes an attribute `part` as Python: `.part`, or `getattr(..., "part")` for a part that is
    no identifier (`layers.0`) but has no quote or backslash; a keyword (`.in`) it gets wrong."""
    return not keyword.iskeyword(part) and '"' not in part and "\\" not in part


class AttributeCodeGen(torch.fx.CodeGen):
    """torch.fx writes a get_attr as `self.a.b`, a SyntaxError where a part is a keyword (`self.layers.in.weight`);
    this rewrites exactly those lines with `getattr`, so targets (and so state_dict keys) stay the names themselves.
    Kept on the graph, so copies (`copy.deepcopy`) and recompiles write the same code."""

    def _gen_python_code(self, nodes: Any, root_module: str, namespace: Any, **kwargs: Any) -> Any:
        code = super()._gen_python_code(nodes, root_module, namespace, **kwargs)
        for node in nodes:
            if node.op != "get_attr" or all(fx_writes(p) for p in node.target.split(".")):
                continue
            fx_form = safe = root_module
            for part in node.target.split("."):
                fx_form = f"{fx_form}.{part}" if part.isidentifier() else f'getattr({fx_form}, "{part}")'
                plain = part.isidentifier() and not keyword.iskeyword(part)
                safe = f"{safe}.{part}" if plain else f"getattr({safe}, {part!r})"
            line = re.compile(rf"^(\s*{re.escape(node.name)} = ){re.escape(fx_form)}$", re.MULTILINE)
            code.src, found = line.subn(lambda m, safe=safe: m.group(1) + safe, code.src)
            if found != 1:
                raise RuntimeError(f"torch.fx wrote get_attr {node.target!r} in a form spinn-export does not know")
        return code
