r"""Matrix buffers kept between evaluations, so that a small kernel block does not page-fault.

A freshly allocated CPU matrix of a megabyte or more comes from ``mmap`` (or from heap memory
that ``free`` has returned to the system), and the first write to each of its 4 KiB pages is a
page fault. For an N = 400 block (160 000 float64 entries, 1.25 MiB) that first touch costs
about ten times the elementwise operation that writes it (measured: 0.8 ms against 0.08 ms on
a reused buffer), so a recursion that allocates a few dozen such matrices per evaluation spends
most of its time faulting. :func:`matrix` hands out buffers that are kept here between calls
and reuses a buffer only when nothing else refers to its memory (no tensor, view, autograd
graph or caller holds it): reuse is invisible to the caller.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import Tensor

__all__ = ["matrix"]

#: smaller buffers come from the allocator's free lists without page faults: not kept
MIN_BYTES = 2**17
#: the kept buffers' total size; the least recently used shapes are dropped beyond it
MAX_BYTES = 2**27

_lock = threading.Lock()
# (shape, dtype, device) -> list of (buffer, the buffer's storage use count when idle)
_kept: OrderedDict[tuple, list[tuple[Tensor, int]]] = OrderedDict()
_kept_bytes = 0


def _use_count(buffer: Tensor) -> int:
    return torch._C._storage_Use_Count(buffer.untyped_storage()._cdata)


def matrix(shape: torch.Size | tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised contiguous tensor of ``shape`` in ``like``'s dtype and device.

    Its memory may be that of an earlier result that is no longer referenced anywhere. The
    tensor is not a view (in-place operations and autograd treat it as a fresh tensor).
    """
    global _kept_bytes
    size = like.element_size()
    for n in shape:
        size *= n
    if like.device.type != "cpu" or size < MIN_BYTES or torch.compiler.is_compiling():
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    key = (tuple(shape), like.dtype, like.device)
    with _lock:
        buffers = _kept.get(key)
        if buffers is None:
            buffers = _kept[key] = []
        else:
            _kept.move_to_end(key)
        for buffer, idle in buffers:
            if _use_count(buffer) == idle:
                return buffer.detach()
        buffer = torch.empty(shape, dtype=like.dtype, device=like.device)
        while _kept_bytes + size > MAX_BYTES and len(_kept) > 1:
            _, old = _kept.popitem(last=False)  # (the current shape is the most recent)
            _kept_bytes -= sum(b.numel() * b.element_size() for b, _ in old)
        if _kept_bytes + size > MAX_BYTES:
            return buffer  # (many live results of one shape: not kept)
        buffers.append((buffer, _use_count(buffer)))
        _kept_bytes += size
        return buffer.detach()


def clear() -> None:
    """Drop every kept buffer (their memory is freed once no result refers to it)."""
    global _kept_bytes
    with _lock:
        _kept.clear()
        _kept_bytes = 0
