"""Layers whose CPU results are the same bits on every x86-64 CPU, for the MLP.

torch's CPU matrix products are MKL's, whose kernels (and so the order of float additions)
follow the CPU's vendor and instruction set; its dropout draws its mask with MKL on Intel CPUs
and with its own code elsewhere. The same seed then trained other weights on other machines, and
dvc.lock differed. Here a product is computed on integers: each row of one factor and each column
of the other is scaled by a power of two and rounded to an integer small enough that every partial
sum stays below 2**53, so float64 holds every step exactly and the order of additions cannot
matter; the result is then scaled back (exact) and rounded once to float32. With the factors'
inner size k, integers keep (52 - log2 k) / 2 bits: 23 for the MLP's layers, about float32's own
precision. Dropout draws its mask from torch's serial uniform generator, and square roots are
IEEE's (torch's CPU sqrt, exp and log are MKL's vector math, whose last bit follows the CPU too).
On a GPU all three are torch's own (bit-identity across GPUs is not claimed).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

# float64 represents every integer below 2**53 exactly.
EXACT_BITS = 52


def _to_integers(factor: torch.Tensor, dim: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`factor` as float64 integers of at most `bits` bits times power-of-two scales along `dim`."""
    peak = factor.detach().abs().amax(dim=dim, keepdim=True).double()
    _, exponent = torch.frexp(peak)
    scale = torch.ldexp(torch.ones_like(peak), exponent - bits)
    return torch.round(factor.detach().double() / scale), scale


def exact_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b (2-D float32) with integer products: the same bits whatever BLAS kernel runs."""
    bits = (EXACT_BITS - math.ceil(math.log2(max(a.shape[1], 2)))) // 2
    int_a, scale_a = _to_integers(a, 1, bits)
    int_b, scale_b = _to_integers(b, 0, bits)
    return ((int_a @ int_b) * scale_a * scale_b).float()


class _ExactLinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> Any:
        ctx.save_for_backward(x, weight)
        return exact_matmul(x, weight.t()) + bias

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        x, weight = ctx.saved_tensors
        ones = torch.ones((1, grad.shape[0]), dtype=grad.dtype)
        return exact_matmul(grad, weight), exact_matmul(grad.t(), x), exact_matmul(ones, grad)[0]


class ExactLinear(nn.Linear):
    """nn.Linear (same parameters, initialisation and state-dict names), exact on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda or self.bias is None:
            return super().forward(x)
        result: torch.Tensor = _ExactLinearFunction.apply(x, self.weight, self.bias)
        return result


class SerialDropout(nn.Dropout):
    """nn.Dropout with its mask from torch's serial uniform generator on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda or not self.training or self.p == 0:
            return super().forward(x)
        keep = (torch.rand(x.shape) >= self.p).to(x.dtype)
        return x * keep / (1 - self.p)


def ieee_sqrt(t: torch.Tensor) -> torch.Tensor:
    """Correctly rounded square root (numpy's, the CPU's sqrt instruction) on the CPU."""
    if t.is_cuda:
        return t.sqrt()
    return torch.from_numpy(np.sqrt(t.numpy()))
