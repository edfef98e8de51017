"""RopePlan: the RoPE scaling a model needs, resolved once by the C++ core from config.json."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Optional, Union

from typing import TYPE_CHECKING

from . import _core
from ._core import ConfigError

if TYPE_CHECKING:  # torch is imported on first use: `pntk inspect` and `validate` never need it
    import torch

PathOrConfig = Union[str, os.PathLike, Mapping]


def _config_text(config: Mapping) -> str:
    try:
        return json.dumps(dict(config), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"<dict>: (value): cannot be written as JSON: {exc}") from None


class RopePlan:
    """A resolved RoPE plan: method, factor, lengths, fp32 inverse frequencies and tables.

    Build it with :meth:`from_config`. Methods: none, linear, ntk, dynamic, pntk, yarn,
    llama3 (and longrope). Runner overrides follow ExLlama: ``theta`` replaces the base,
    ``alpha_value`` multiplies it by alpha^(d/(d-2)) before the method, ``compress_pos_emb``
    divides positions after it.
    """

    def __init__(self, core_plan: "_core.RopePlan"):
        self._plan = core_plan

    @classmethod
    def from_config(
        cls,
        path_or_dict: PathOrConfig,
        *,
        theta: Optional[float] = None,
        alpha_value: float = 1.0,
        compress_pos_emb: float = 1.0,
        max_seq_len: Optional[int] = None,
        static_tables: bool = False,
    ) -> "RopePlan":
        """Plan from a model directory, a config.json path or a config dict.

        Raises pntk.ConfigError (a ValueError) naming the file and the field at fault.
        ``static_tables=True`` tells the plan that the runner builds its tables once
        (ExLlama): a dynamic plan is then evaluated at ``max_seq_len``.
        """
        overrides = dict(
            theta=theta,
            alpha_value=float(alpha_value),
            compress_pos_emb=float(compress_pos_emb),
            max_seq_len=max_seq_len,
            static_tables=static_tables,
        )
        if isinstance(path_or_dict, Mapping):
            return cls(_core.plan_from_json(_config_text(path_or_dict), "<dict>", **overrides))
        if not isinstance(path_or_dict, (str, os.PathLike)):
            raise TypeError(f"path_or_dict: expected a path or a dict, got {type(path_or_dict).__name__}")
        return cls(_core.plan_from_file(os.fspath(path_or_dict), **overrides))

    # -- what the plan says ---------------------------------------------------------------
    method = property(lambda self: self._plan.method, doc="none, linear, ntk, dynamic, pntk, yarn, llama3, longrope")
    factor = property(lambda self: self._plan.factor, doc="the method's scaling factor (pntk: integer)")
    attention_factor = property(lambda self: self._plan.attention_factor, doc="multiplies cos and sin")
    original_max_position_embeddings = property(lambda self: self._plan.original_max_position_embeddings)
    extended_max_position_embeddings = property(lambda self: self._plan.extended_max_position_embeddings)
    max_seq_len = property(lambda self: self._plan.max_seq_len, doc="table length a runner should allocate")
    rotary_dim = property(lambda self: self._plan.rotary_dim)
    theta = property(lambda self: self._plan.theta, doc="rope_theta in use (after a theta override)")
    base = property(lambda self: self._plan.base, doc="theta after the alpha_value override (double)")
    alpha_value = property(lambda self: self._plan.alpha_value)
    compress_pos_emb = property(lambda self: self._plan.compress_pos_emb)
    position_scale = property(lambda self: self._plan.position_scale, doc="1 / compress_pos_emb")
    method_note = property(lambda self: self._plan.method_note)
    correction_ranges = property(lambda self: list(self._plan.correction_ranges))
    source = property(lambda self: self._plan.source, doc="the config.json path, or <dict>")
    core = property(lambda self: self._plan, doc="the pntk._core.RopePlan (for kernels)")

    def inv_freq(self, seq_len: Optional[int] = None) -> "torch.Tensor":
        """fp32 inverse frequencies [rotary_dim/2]; seq_len matters to dynamic and longrope."""
        import torch

        return torch.from_numpy(self._plan.inv_freq(int(seq_len or 0)))

    def tables(
        self,
        seq_len: Optional[int] = None,
        dtype: "torch.dtype" = None,
        device: Union[str, "torch.device"] = "cpu",
    ) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(cos, sin), each [seq_len, rotary_dim] in NeoX layout, attention factor folded in.

        ``seq_len`` defaults to max_seq_len; for the dynamic method it is also the current
        sequence length the base is evaluated at. ``dtype`` defaults to torch.float16.
        """
        import numpy as np
        import torch

        from ._tensor import TABLE_DTYPE_CODES

        dtype = torch.float16 if dtype is None else dtype
        if dtype not in TABLE_DTYPE_CODES:
            raise ValueError(f"dtype: must be torch.float32, float16 or bfloat16, got {dtype}")
        length = self.max_seq_len if seq_len is None else int(seq_len)
        device = torch.device(device)
        if device.type == "cuda" and _core.build_info()["cuda"]:  # written on the device by the CUDA kernel
            from .cuda import write_rope_tables

            if length < 0:
                raise ValueError(f"seq_len: must not be negative, got {length}")

            cos = torch.empty(length, self.rotary_dim, dtype=dtype, device=device)
            sin = torch.empty(length, self.rotary_dim, dtype=dtype, device=device)
            write_rope_tables(self, cos, sin, inv_freq_seq_len=length)
            return cos, sin
        cos, sin = self._plan.tables(length, TABLE_DTYPE_CODES[dtype], length)
        cos, sin = torch.from_numpy(np.ascontiguousarray(cos)), torch.from_numpy(np.ascontiguousarray(sin))
        if dtype == torch.bfloat16:
            cos, sin = cos.view(torch.bfloat16), sin.view(torch.bfloat16)
        if device.type != "cpu":  # a build without CUDA kernels: the same values, made here
            cos, sin = cos.to(device), sin.to(device)
        return cos, sin

    def describe(self) -> str:
        """The one-line report: 'pntk: RoPE pntk, scaling factor 4 (4096 -> 16384 positions), ...'."""
        return self._plan.describe()

    def announce(self, where: Optional[str] = None, file=None) -> None:
        """Print the report line on stdout (for a runner building this plan); PNTK_QUIET=1 silences it."""
        if os.environ.get("PNTK_QUIET") == "1":
            return
        line = self.describe() + (f" [{where}]" if where else "")
        print(line, file=file or sys.stdout, flush=True)

    def __repr__(self) -> str:
        return f"RopePlan({self.describe()!r})"
