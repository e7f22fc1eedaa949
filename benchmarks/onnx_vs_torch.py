"""Throughput (patches/s) of the exported ONNX UNet under onnxruntime vs the torch model, CPU.

Builds the default UNet (``configs/unet3d.yml``: 16 features, depth 3) as a run, exports it with
``volseg export`` (the same code path as the CLI), then times both runtimes on the same random
raw patches for each patch size and batch: one warm-up call, then calls until ``--seconds``
have passed (at least ``--min-calls``). Both use ``--threads`` intra-op threads. Outputs are
compared too (``max_abs_diff``).

    .venv/bin/python benchmarks/onnx_vs_torch.py                     # 32 48 64 96, batch 1 and 4
    .venv/bin/python benchmarks/onnx_vs_torch.py --patch 32 64 --batch 1 --json -

Writes ``benchmarks/onnx_vs_torch.json`` (``--json`` elsewhere, ``-`` for stdout) and prints a
table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _time(fn, seconds: float, min_calls: int) -> tuple[float, int]:
    fn()  # warm-up
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls, calls


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs="+", default=[32, 48, 64, 96])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--min-calls", type=int, default=2)
    parser.add_argument("--json", default=str(HERE / "onnx_vs_torch.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import onnxruntime as ort
    import torch

    from volseg.models import build_model, load_model
    from volseg.models.export import export_model
    from volseg.training.config import resolve
    from volseg.training.trainer import model_config

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        run.mkdir()
        cfg = resolve(model_type="unet")
        cfg["model"].update(norm_mean=100.0, norm_std=20.0)
        torch.manual_seed(0)
        mcfg = model_config(cfg)
        torch.save({"format": "volseg-run", "version": 1, "model_config": mcfg, "config": cfg,
                    "state_dict": build_model(mcfg).state_dict(), "step": 0}, run / "model.pt")
        t0 = time.perf_counter()
        export_model(run, Path(tmp) / "unet.onnx")
        export_seconds = time.perf_counter() - t0
        model = load_model(run)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(Path(tmp) / "unet.onnx"), options,
                                       providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        rows = []
        for patch in args.patch:
            for batch in args.batch:
                rng = np.random.default_rng(0)
                x = (100 + 20 * rng.normal(size=(batch, 1, patch, patch, patch))).astype(np.float32)
                xt = torch.from_numpy(x)

                def run_torch():
                    with torch.inference_mode():
                        return model(xt).numpy()

                def run_ort():
                    return session.run(None, {name: x})[0]

                diff = float(np.abs(run_torch() - run_ort()).max())
                t_torch, n_torch = _time(run_torch, args.seconds, args.min_calls)
                t_ort, n_ort = _time(run_ort, args.seconds, args.min_calls)
                row = {"patch": patch, "batch": batch,
                       "torch_patches_per_s": round(batch / t_torch, 3),
                       "onnxruntime_patches_per_s": round(batch / t_ort, 3),
                       "speedup_onnxruntime": round(t_torch / t_ort, 3),
                       "calls": [n_torch, n_ort], "max_abs_diff": diff}
                rows.append(row)
                print(json.dumps(row), flush=True)
    result = {"benchmark": "onnx_vs_torch", "model": "unet (configs/unet3d.yml: ch 16, depth 3)",
              "threads": args.threads, "cpu": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "onnxruntime": ort.__version__, "export_seconds": round(export_seconds, 2),
              "rows": rows}
    print(f"\n{'patch':>6} {'batch':>5} {'torch p/s':>10} {'ORT p/s':>10} {'ORT/torch':>9}")
    for r in rows:
        print(f"{r['patch']:>6} {r['batch']:>5} {r['torch_patches_per_s']:>10.2f} "
              f"{r['onnxruntime_patches_per_s']:>10.2f} {r['speedup_onnxruntime']:>9.2f}")
    if args.json == "-":
        print(json.dumps(result, indent=2))
    else:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
