"""The kept matrix buffers: handed out again only when nothing refers to their memory."""

from __future__ import annotations

import gc

import torch

from gp_ntk.ops import workspace


def test_a_buffer_in_use_is_never_handed_out_again() -> None:
    workspace.clear()
    like = torch.empty(0, dtype=torch.float64)
    first = workspace.matrix((300, 300), like)
    second = workspace.matrix((300, 300), like)
    assert first.data_ptr() != second.data_ptr()
    view = first[1:]
    pointer = first.data_ptr()
    del first
    gc.collect()
    # a view still refers to the memory
    assert workspace.matrix((300, 300), like).data_ptr() not in (pointer, second.data_ptr())
    del view
    gc.collect()
    again = workspace.matrix((300, 300), like)
    assert again.data_ptr() == pointer
    assert again.shape == (300, 300) and not again._is_view()
    workspace.clear()


def test_intermediates_saved_by_a_graph_are_not_overwritten() -> None:
    # two graphs alive at once: the second evaluation must not reuse the first one's buffers
    import gp_ntk

    kernel = gp_ntk.NTKKernel(3, "relu", weight_variance=2.0, bias_variance=0.1).double()
    x = torch.randn(200, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k1 = kernel(x).to_dense()
    expected = torch.autograd.grad(k1.sum(), kernel.raw_weight_variance, retain_graph=True)[0]
    k2 = kernel(2 * x).to_dense()
    again = torch.autograd.grad(k1.sum(), kernel.raw_weight_variance)[0]
    torch.testing.assert_close(again, expected, rtol=1e-14, atol=0)
    assert not torch.equal(k1, k2)
