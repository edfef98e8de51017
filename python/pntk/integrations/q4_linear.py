"""Q4Linear: a torch.nn.Module that runs a pntk.Q4Matrix (4-bit GPTQ weights) as a Linear layer."""
from __future__ import annotations

import torch


class Q4Linear(torch.nn.Module):
    """y = x @ W + bias with W held as a pntk.Q4Matrix [in_features, out_features] (bias inside it).

    Used wherever a runner's Linear or GPTQ QuantLinear is swapped for pntk's kernel.
    """

    def __init__(self, q4):
        super().__init__()
        self.q4 = q4
        self.in_features = q4.in_features
        self.out_features = q4.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.q4(x)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.q4.group_size}, act_order={self.q4.act_order}"
        )
