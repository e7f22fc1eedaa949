"""Peak memory of one training step and one inference step, per patch size, amp and checkpoint.

Each combination runs one real training step (forward, loss, backward, AdamW step) on random
data and one inference step (a forward pass under ``torch.no_grad``; for the diffusion model
one denoiser evaluation, i.e. one DDIM step). Patch sides are in voxels, (z, y, x).

What is measured:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` around each step
  (``peak_bytes`` training, ``infer_peak_bytes`` inference).
* CPU: ``activation_bytes`` are the bytes of the tensors autograd saves for backward
  (``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage, parameters excluded);
  ``peak_bytes`` = activations + parameters + gradients + optimizer state. Each combination
  runs in a fresh Python process (the process peak RSS only grows), which reports its peak RSS
  (``rss_peak_bytes``) and how much each step raised it (``infer_rss_bytes`` then
  ``train_rss_bytes``: inference runs first). Inference does not depend on checkpointing, so a
  checkpointed row takes its ``infer_*`` values from the row without checkpointing.

``activation_bytes`` is the saved-tensor count on every device (it is what checkpointing cuts).

Mixed precision is measured where it pays off (:func:`volseg.models.precision.amp_pays_off`:
CUDA, or a CPU with native bf16). Elsewhere bf16 is emulated, about 100x slower, and
``train --amp`` runs in fp32, so by default the amp rows are skipped with one note saying why
(``notes``); an explicit ``--amp`` measures them anyway, with a warning. Patches whose training
step cannot fit this machine's memory (extrapolated from a small probe step) are refused
before any measuring, naming the limit and the largest cube that fits.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any, Sequence

from volseg.errors import VolsegError

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000 ** 2, "mb": 1000 ** 2, "g": 1000 ** 3,
          "gb": 1000 ** 3, "t": 1000 ** 4, "tb": 1000 ** 4, "kib": 1024, "mib": 1024 ** 2,
          "gib": 1024 ** 3, "tib": 1024 ** 4}


def parse_budget(text: str | None) -> int | None:
    """``--budget`` such as 8GiB, 512MB, 1.5G, 2e9 -> bytes (None stays None).

    Decimal units k/M/G/T(B) are powers of 1000, binary KiB/MiB/GiB/TiB powers of 1024.
    """
    if text is None or str(text).strip() == "":
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _UNITS:
        raise VolsegError("--budget", f"cannot read {text!r} as a memory size; use e.g. 8GiB, 512MB or 1.5G")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(value) or value <= 0:
        raise VolsegError("--budget", f"must be a positive size, got {text!r}")
    return int(value)


def parse_patches(text: str | Sequence, *, multiple: int) -> list[tuple[int, int, int]]:
    """``--patch 32,64,96`` (cube sides; ``32x64x64`` for one non-cubic patch) -> (z, y, x) list."""
    from volseg.geometry import parse_size3

    items = [p for p in (text.split(",") if isinstance(text, str) else list(text)) if str(p).strip()]
    if not items:
        raise VolsegError("--patch", "give at least one patch size, e.g. 32,64,96")
    patches = [parse_size3(str(p).strip(), name="--patch") for p in items]
    for patch in patches:
        if any(side % multiple for side in patch):
            raise VolsegError("--patch", f"{'x'.join(map(str, patch))}: every side must be a "
                              f"multiple of {multiple} (2^depth of the model)")
    return patches


def model_config(model: str, *, checkpoint: bool) -> dict:
    """The benchmarked model: the defaults of ``configs/{unet3d,diffusion3d}.yml``."""
    if model not in ("unet", "diffusion"):
        raise VolsegError("--model", f"unknown model {model!r}; use unet or diffusion")
    return {"type": model, "checkpoint": bool(checkpoint)}


def bench_memory(*, model: str = "unet", patches: str | Sequence = "32,64",
                 amp: bool | None = None, checkpoint: bool | None = None, batch_size: int = 1,
                 budget: str | None = None, device: str = "auto", isolate: bool = True,
                 quiet: bool = False) -> dict[str, Any]:
    """Measure every combination of patch size x amp x checkpoint; see the module docstring.

    Parameters
    ----------
    model : {"unet", "diffusion"}
    patches : str or sequence
        Cube sides (``"32,64,96"``) or (z, y, x) sizes, multiples of 2^depth.
    amp, checkpoint : bool, optional
        Fixed value, or None for both off and on.
    batch_size : int
    budget : str, optional
        Memory budget such as ``8GiB``: report per combination the largest patch that fits.
    device : str
        auto, cpu, cuda or cuda:N.
    isolate : bool
        CPU only: measure each combination in a fresh process (honest peak RSS).

    Returns
    -------
    dict
        ``{"device", "rows": [...], "budget": {...} or None}``; see :func:`measure`.
    """
    import torch

    from volseg.models import model_depth, resolve_device
    from volseg.progress import progress_bar

    from volseg.models.precision import NO_BF16, amp_pays_off

    budget_bytes = parse_budget(budget)
    if batch_size < 1:
        raise VolsegError("--batch-size", f"must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    depth = model_depth(model_config(model, checkpoint=False))
    sizes = parse_patches(patches, multiple=2 ** depth)
    notes = []
    amps = [False, True] if amp is None else [bool(amp)]
    if True in amps and not amp_pays_off(dev):
        if amp is None:
            amps = [False]
            notes.append(f"amp rows skipped: {NO_BF16}, and train --amp runs in fp32 here; "
                         "pass --amp to measure bf16 anyway")
        elif not quiet:
            print(f"warning: --amp: {NO_BF16}; measuring bf16 anyway (train --amp runs in fp32 "
                  "on this machine)", file=sys.stderr)
    checkpoints = [False, True] if checkpoint is None else [bool(checkpoint)]
    combos = list(itertools.product(amps, checkpoints))
    check_fits_machine(model, sizes, batch_size=int(batch_size), device=dev,
                       checkpoint=True in checkpoints, amp=False not in amps,
                       multiple=2 ** depth)
    rows = []
    with progress_bar("bench-memory", len(sizes) * len(combos), quiet=quiet) as bar:
        for (use_amp, use_ckpt), patch in itertools.product(combos, sizes):
            spec = {"model": model, "patch": list(patch), "amp": use_amp, "checkpoint": use_ckpt,
                    "batch_size": int(batch_size), "device": str(dev)}
            plain = next((r for r in rows if r["patch"] == list(patch) and r["amp"] == use_amp
                          and not r["checkpoint"]), None)
            if use_ckpt and plain is not None:  # inference ignores checkpointing: measured once
                spec["infer"] = False
            row = _measure_child(spec) if isolate and dev.type == "cpu" else measure(spec)
            if not row.get("infer_seconds") and plain is not None:
                row.update({k: v for k, v in plain.items() if k.startswith("infer_")})
            rows.append(row)
            bar.advance(1)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return {"device": f"{dev} ({name})" if dev.type == "cuda" else "cpu", "rows": rows,
            "budget": fits(rows, budget_bytes, multiple=2 ** depth) if budget_bytes else None,
            "notes": notes}


def machine_memory(device) -> int:
    """Bytes a step may use: the GPU's total memory, or the host's physical memory (lowered to
    the cgroup limit where one is set)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return int(total)


def check_fits_machine(model: str, sizes: list, *, batch_size: int, device, checkpoint: bool,
                       amp: bool, multiple: int) -> None:
    """Refuse a patch whose training step cannot fit in :func:`machine_memory`, before measuring.

    The need is extrapolated from one probe step at ``2 * multiple`` voxels a side (activations
    grow with the voxel count): parameters, gradients and optimizer state plus the probe's
    activation bytes per voxel (with checkpointing when it is measured, halved when only amp
    rows are); the lightest measured combination must fit.

    Raises
    ------
    VolsegError
        ``--patch``: the patch, the bytes it needs, the machine's memory and the largest cube
        side that fits.
    """
    side = 2 * multiple
    big = [p for p in sizes if math.prod(p) > side ** 3]
    if not big:
        return
    limit = machine_memory(device)
    if all(math.prod(p) * batch_size * 8192 <= limit for p in big):
        return  # far below the limit at any plausible bytes per voxel: no probe needed
    probe = measure({"model": model, "patch": [side] * 3, "amp": False, "checkpoint": checkpoint,
                     "batch_size": 1, "device": str(device), "probe": True})
    per_voxel = probe["activation_bytes"] / side ** 3 * (0.5 if amp else 1.0)
    for patch in big:
        need = probe["state_bytes"] + per_voxel * math.prod(patch) * batch_size
        if need > limit:
            room = max(0.0, (limit - probe["state_bytes"]) / (per_voxel * batch_size))
            fit = int(room ** (1 / 3)) // multiple * multiple
            hint = f"use --patch {fit} or smaller" if fit >= multiple else "no patch fits"
            raise VolsegError("--patch", f"{'x'.join(map(str, patch))}: one training step needs about "
                              f"{_gib(need)} (extrapolated from a {side}^3 step), more than the "
                              f"{_gib(limit)} of memory of this machine ({device}); {hint}")


def _gib(n: float) -> str:
    return f"{n / 1024 ** 3:,.1f} GiB"


def fits(rows: list[dict], budget: int, *, multiple: int) -> dict[str, Any]:
    """Largest patch per (model, amp, checkpoint) whose training peak fits ``budget`` bytes.

    ``measured``: the largest measured patch with ``peak_bytes <= budget``. ``extrapolated``:
    the largest cube side (a multiple of ``multiple``) predicted to fit by a least-squares fit
    peak = a + b * voxels over the measured patches (activations grow with the voxel count).
    """
    out = {"bytes": int(budget), "fits": []}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["amp"], row["checkpoint"]), []).append(row)
    for (model, amp, ckpt), group in groups.items():
        ok = [r for r in group if r["peak_bytes"] <= budget]
        best = max(ok, key=lambda r: math.prod(r["patch"])) if ok else None
        voxels = [math.prod(r["patch"]) * r["batch_size"] for r in group]
        peaks = [r["peak_bytes"] for r in group]
        if len(set(voxels)) >= 2:
            n = len(voxels)
            mx, my = sum(voxels) / n, sum(peaks) / n
            b = sum((x - mx) * (y - my) for x, y in zip(voxels, peaks)) / sum((x - mx) ** 2 for x in voxels)
            a = my - b * mx
        else:
            a = group[0].get("state_bytes", 0)
            b = (peaks[0] - a) / voxels[0]
        side = 0
        if b > 0 and budget > a:
            side = int(((budget - a) / (b * group[0]["batch_size"])) ** (1 / 3) + 1e-9) // multiple * multiple
        out["fits"].append({"model": model, "amp": amp, "checkpoint": ckpt,
                            "measured": best["patch"] if best else None,
                            "extrapolated": [side] * 3 if side > 0 else None,
                            "bytes_per_voxel": b, "fixed_bytes": a})
    return out


def _measure_child(spec: dict) -> dict:
    code = ("import json, sys; from volseg.bench.memory import measure; "
            "print(json.dumps(measure(json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-1:])
        if proc.returncode == -9 or "MemoryError" in tail or "DefaultCPUAllocator" in tail:
            raise VolsegError("--patch", f"{'x'.join(map(str, spec['patch']))}: the measuring process ran "
                              "out of memory; use a smaller --patch or --batch-size")
        raise RuntimeError(f"the measuring process failed for {spec}: {tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _rss_peak() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def measure(spec: dict) -> dict:
    """Measure one combination in this process. ``spec``: model, patch, amp, checkpoint,
    batch_size, device; ``infer: false`` skips the inference step (it does not depend on
    checkpointing: the caller copies it from the row without), ``probe: true`` counts only the
    forward's saved tensors (no inference, no backward; ``state_bytes`` as parameters,
    gradients and two AdamW moments). Returns one row (see the module docstring)."""
    import torch

    from volseg.models import build_model

    dev = torch.device(spec["device"])
    torch.manual_seed(0)
    net = build_model(model_config(spec["model"], checkpoint=spec["checkpoint"])).to(dev)
    core = net.denoiser if spec["model"] == "diffusion" else net
    params = list(core.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    shape = (spec["batch_size"], 0, *spec["patch"])
    n_in = core.conv_in.in_channels if spec["model"] == "diffusion" else core.in_channels
    x = torch.randn(shape[0], n_in, *shape[2:], device=dev)
    target = (torch.randn if spec["model"] == "diffusion" else torch.rand)(
        shape[0], 1, *shape[2:], device=dev)
    t = torch.full((shape[0],), 500.0, device=dev)
    amp_dtype = torch.float16 if dev.type == "cuda" else torch.bfloat16

    def forward():
        with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=spec["amp"]):
            return core(x, t) if spec["model"] == "diffusion" else core.logits(x)

    cuda = dev.type == "cuda"
    row = {key: spec[key] for key in ("model", "patch", "amp", "checkpoint", "batch_size")}
    # Inference first: on CPU the process peak RSS only grows.
    core.eval()
    rss0 = rss1 = _rss_peak()
    infer = spec.get("infer", True) and not spec.get("probe", False)
    if infer and cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    if infer:
        start = time.perf_counter()
        with torch.no_grad():
            out = forward()
        if cuda:
            torch.cuda.synchronize(dev)
            row["infer_peak_bytes"] = int(torch.cuda.max_memory_allocated(dev))
            row["infer_activation_peak_bytes"] = int(torch.cuda.max_memory_allocated(dev) - base)
        row["infer_seconds"] = time.perf_counter() - start
        del out
        rss1 = _rss_peak()
        row["infer_rss_bytes"] = rss1 - rss0

    core.train()
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scaler = torch.amp.GradScaler(dev.type, enabled=spec["amp"] and cuda)
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_ptrs:
            saved[ptr] = max(saved.get(ptr, 0), storage.nbytes())
        return tensor

    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = forward()
        loss = (torch.nn.functional.mse_loss(out.float(), target) if spec["model"] == "diffusion"
                else torch.nn.functional.binary_cross_entropy_with_logits(out.float(), target))
    if spec.get("probe", False):
        return dict(row, activation_bytes=int(sum(saved.values())), state_bytes=4 * param_bytes)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if cuda:
        torch.cuda.synchronize(dev)
    row["seconds"] = time.perf_counter() - start
    state_bytes = param_bytes * 2 + sum(v.numel() * v.element_size() for s in optimizer.state.values()
                                        for v in s.values() if torch.is_tensor(v))
    row["activation_bytes"] = int(sum(saved.values()))
    row["state_bytes"] = int(state_bytes)
    if cuda:
        row["peak_bytes"] = int(torch.cuda.max_memory_allocated(dev))
    else:
        row["peak_bytes"] = row["activation_bytes"] + row["state_bytes"]
        row["rss_peak_bytes"] = _rss_peak()
        row["train_rss_bytes"] = row["rss_peak_bytes"] - rss1
    return row
