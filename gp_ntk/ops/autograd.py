"""Which inputs of a custom autograd function the running backward pass will use.

``ctx.needs_input_grad`` says which inputs *could* receive a gradient: those that required one
when the function ran. A backward pass often uses fewer. An acquisition function optimised by
``torch.autograd.grad(value, X)`` runs the kernel's backward pass with every hyperparameter
requiring a gradient, yet the engine discards all but the candidates' gradient; a hand-written
backward pass that computes only what the engine will use saves the hyperparameters' reductions
and, for the training side of a cross-covariance, its whole chain.

The engine's answer is ``torch._C._will_engine_execute_node``, the check behind
``torch.autograd.graph.register_multi_grad_hook``. It cannot be asked about a leaf tensor inside
``torch.autograd.grad`` and is not public, so where it is unavailable or refuses, the input
counts as needed: the fallback is ``ctx.needs_input_grad`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["gradient_nodes", "wanted_gradients"]

_will_execute = getattr(torch._C, "_will_engine_execute_node", None)


def gradient_nodes(tensors: Sequence[Tensor | None]) -> tuple:
    """Each tensor's ``grad_fn``, read in a custom function's ``forward`` for :func:`wanted_gradients`.

    ``None`` for a leaf or a tensor without a gradient (the fallback applies to leaves).
    """
    return tuple(None if t is None else t.grad_fn for t in tensors)


def wanted_gradients(nodes: Sequence, needs_input_grad: Sequence[bool]) -> tuple[bool, ...]:
    """``needs_input_grad`` narrowed to the inputs the running backward pass will use.

    Call inside ``backward`` only. ``nodes``: :func:`gradient_nodes` of the same inputs, in the
    same order. An input counts as wanted where it needs a gradient and either the engine will
    run its node or the engine cannot say (a leaf, or no such check in this torch).
    """
    if _will_execute is None:
        return tuple(needs_input_grad)
    wanted = []
    for node, needs in zip(nodes, needs_input_grad):
        if needs and node is not None:
            try:
                needs = bool(_will_execute(node))
            except RuntimeError:
                needs = True
        wanted.append(bool(needs))
    return tuple(wanted)
