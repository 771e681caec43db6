"""Seeing the graph: export the computation behind a tensor as Graphviz DOT text.

Each op is a box, each tensor an ellipse with its shape; arrows run from inputs to outputs,
the direction of the forward pass (backward walks them the other way). Export before
calling `backward()` (or with `retain_graph=True`): backward frees the graph. Render with
`dot -Tpng graph.dot -o graph.png`, or paste the text into any Graphviz viewer.
"""
from __future__ import annotations

from numpylm.autograd.tensor import _FREED, Tensor, _tensor_inputs


def _label(t: Tensor) -> str:
    name = f"{t.name} " if t.name else ""
    shape = "scalar" if t.ndim == 0 else "×".join(map(str, t.shape))
    value = f" = {t.item():.4g}" if t.size == 1 else ""
    return f"{name}{shape}{value}".strip().replace('"', "'")


def to_dot(root: Tensor, graph_name: str = "autograd") -> str:
    """The graph that produced `root`, as DOT text (no Graphviz needed to produce it)."""
    lines = [f"digraph {graph_name} {{", "  rankdir=LR;",
             '  node [fontname="Helvetica", fontsize=10];']
    number: dict[int, int] = {}  # short, stable node names: t0 is the root
    key = lambda t: number.setdefault(id(t), len(number))  # noqa: E731
    seen: set[int] = set()
    stack = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        style = ', style=filled, fillcolor="#dde8f5"' if t.requires_grad and t.is_leaf else ""
        lines.append(f'  t{key(t)} [label="{_label(t)}", shape=ellipse{style}];')
        node = t._node
        if node is None:
            continue
        if node is _FREED:
            raise RuntimeError("to_dot: this graph was freed by backward(); export it first "
                               "or call backward(retain_graph=True)")
        lines.append(f'  op{key(t)} [label="{node.op}", shape=box];')
        lines.append(f"  op{key(t)} -> t{key(t)};")
        for x in _tensor_inputs(node):
            lines.append(f"  t{key(x)} -> op{key(t)};")
            stack.append(x)
    lines.append("}")
    return "\n".join(lines) + "\n"
