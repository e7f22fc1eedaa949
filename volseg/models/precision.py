"""Mixed precision: where ``--amp`` pays off, and what ``--amp`` runs as on this device.

``--amp`` is fp16 autocast with a ``GradScaler`` on CUDA and bf16 autocast on a CPU. A CPU
without native bf16 instructions (AVX512-BF16 or AMX) emulates bf16, and a 3D convolution under
autocast then runs about 100x slower than in fp32 (measured on an AVX2-only AMD EPYC: 8.9 s
against 0.09 s); ``train --amp`` and ``predict --amp`` run in fp32 there, with one warning.
Shared by training, inference and ``bench-memory`` (torch only, no storage).
"""

from __future__ import annotations

import sys

import torch

NO_BF16 = ("this CPU has no native bf16 (AVX512-BF16 or AMX), where bf16 autocast is about "
           "100x slower than fp32")


def amp_pays_off(device: torch.device | str = "cpu") -> bool:
    """Whether mixed precision speeds ``device`` up: always on CUDA (fp16); on a CPU only with
    native bf16 instructions (AVX512-BF16 or AMX)."""
    if torch.device(device).type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def use_amp(device: torch.device | str, requested: bool, *, warn: bool = True) -> bool:
    """The precision a command runs in: ``requested`` where amp pays off, else False (fp32)
    with one ``warning: --amp: ...`` line on stderr (``warn=False``: silent, e.g. on the
    non-writing ranks of a distributed run)."""
    if not requested or amp_pays_off(device):
        return bool(requested)
    if warn:
        print(f"warning: --amp: {NO_BF16}; running in fp32 (--amp pays off on CUDA or on a CPU "
              "with native bf16)", file=sys.stderr)
    return False
