"""The two spatial shifts, pinned quarter by quarter on tensors small enough to check by hand."""

from __future__ import annotations

import pytest
import torch

from s2mlp_cli.arch import spatial_shift1, spatial_shift2

# One channel per quarter, H=3, W=4 (not square, so an H/W swap cannot pass); value = 10*h + w.
GRID = torch.tensor([[0.0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]])

PLUS_H = [[0, 1, 2, 3], [0, 1, 2, 3], [10, 11, 12, 13]]  # out[h] = in[h-1], row 0 kept
MINUS_H = [[10, 11, 12, 13], [20, 21, 22, 23], [20, 21, 22, 23]]  # out[h] = in[h+1], last row kept
PLUS_W = [[0, 0, 1, 2], [10, 10, 11, 12], [20, 20, 21, 22]]  # out[w] = in[w-1], column 0 kept
MINUS_W = [[1, 2, 3, 3], [11, 12, 13, 13], [21, 22, 23, 23]]  # out[w] = in[w+1], last column kept


def _input(per_quarter: int = 1, batch: int = 1) -> torch.Tensor:
    """(B, 3, 4, 4*per_quarter): channel c holds GRID + 100*c, sample b adds 1000*b."""
    c = 4 * per_quarter
    x = GRID[None, :, :, None] + 100 * torch.arange(c, dtype=torch.float32)
    return torch.cat([x + 1000 * b for b in range(batch)])


def _expected(quarters: list[list[list[int]]], per_quarter: int = 1, batch: int = 1) -> torch.Tensor:
    out = torch.empty(batch, 3, 4, 4 * per_quarter)
    for b in range(batch):
        for c in range(4 * per_quarter):
            out[b, :, :, c] = (
                torch.tensor(quarters[c // per_quarter], dtype=torch.float32) + 100 * c + 1000 * b
            )
    return out


@pytest.mark.parametrize("per_quarter", [1, 2])
def test_ss1_quarters(per_quarter: int) -> None:
    x = _input(per_quarter, batch=2)
    expected = _expected([PLUS_H, MINUS_H, PLUS_W, MINUS_W], per_quarter, batch=2)
    torch.testing.assert_close(spatial_shift1(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("per_quarter", [1, 2])
def test_ss2_quarters(per_quarter: int) -> None:
    x = _input(per_quarter, batch=2)
    expected = _expected([PLUS_W, MINUS_W, PLUS_H, MINUS_H], per_quarter, batch=2)
    torch.testing.assert_close(spatial_shift2(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("shift", [spatial_shift1, spatial_shift2])
def test_shift_is_out_of_place(shift) -> None:
    x = torch.randn(2, 5, 6, 8)
    before = x.clone()
    out = shift(x)
    assert out.data_ptr() != x.data_ptr()
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def _gather_reference(x: torch.Tensor, plan: list[tuple[int, int]]) -> torch.Tensor:
    """Independent statement of the shift: every output reads in[clamp(i - step)] along its axis."""
    q = x.shape[-1] // 4
    parts = []
    for k, (axis, step) in enumerate(plan):
        part = x[..., k * q : (k + 1) * q]
        n = x.shape[axis]
        index = (torch.arange(n) - step).clamp(0, n - 1)
        parts.append(part.index_select(axis, index))
    return torch.cat(parts, dim=-1)


@pytest.mark.parametrize(
    ("shift", "plan"),
    [
        (spatial_shift1, [(1, 1), (1, -1), (2, 1), (2, -1)]),
        (spatial_shift2, [(2, 1), (2, -1), (1, 1), (1, -1)]),
    ],
)
def test_shift_matches_gather_formulation(shift, plan) -> None:
    x = torch.randn(3, 7, 5, 24)
    torch.testing.assert_close(shift(x), _gather_reference(x, plan), rtol=0, atol=0)
    # a strided view (as the token mixer passes) gives the same answer as a contiguous copy
    wide = torch.randn(3, 7, 5, 72)
    view = wide[..., 24:48]
    torch.testing.assert_close(shift(view), _gather_reference(view.contiguous(), plan), rtol=0, atol=0)


def test_shift_keeps_gradients() -> None:
    x = torch.randn(1, 4, 4, 8, requires_grad=True)
    spatial_shift1(x).sum().backward()
    # each output reads one input, so gradients count how often an input is read; totals are conserved
    assert x.grad is not None and x.grad.sum().item() == pytest.approx(x.numel())


@pytest.mark.parametrize("shape", [(1, 4, 4, 6), (4, 4, 8)])
def test_shift_rejects_bad_shapes(shape) -> None:
    with pytest.raises(ValueError, match="quarters|channels-last"):
        spatial_shift1(torch.zeros(shape))
