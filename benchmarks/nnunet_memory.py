"""Peak memory and wall time of nnU-Net's predictor and of ``volseg predict`` on one model folder.

Makes a model folder through nnU-Net's own trainer (tests/nnunet_folder.py: 4-stage 3d_fullres
PlainConvUNet, CT normalisation, random weights, one fold) and two volumes, the second with 8x
the voxels of the first (default sides 128 and 256, textured everywhere so nnU-Net's crop is
the whole volume). Each tool runs in a fresh subprocess, whose peak resident memory is read
from ``os.wait4`` (``ru_maxrss``):

* nnU-Net: ``nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False)
  .predict_single_npy_array`` on the volume loaded from ``.npy`` (what it needs: the case in
  memory);
* volseg: ``volseg predict FOLDER volume.zarr -o out.zarr --chunks C --tile T``.

Prints one JSON object (``--json FILE`` also writes it). Needs the dev extra (nnunetv2).

    python benchmarks/nnunet_memory.py                       # sides 128 and 256, patch 32
    python benchmarks/nnunet_memory.py --sides 64 128 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

NNUNET = """
import sys, numpy as np, torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
p = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=sys.argv[4] == "on", perform_everything_on_device=False,
                    device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=False)
p.initialize_from_trained_model_folder(sys.argv[1], use_folds=(0,), checkpoint_name="checkpoint_final.pth")
data = np.load(sys.argv[2])[None]
labels, probs = p.predict_single_npy_array(data, {"spacing": [1.0, 1.0, 1.0]}, None, None, True)
np.save(sys.argv[3], probs[1])
"""


def measured(cmd: list[str], env: dict) -> tuple[float, int]:
    """(wall seconds, peak RSS bytes) of one subprocess."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, int(usage.ru_maxrss) * 1024


def _compare(folder: Path, tmp: Path, side: int, mirror: str, args, env: dict) -> dict:
    """Both tools on the ``side``^3 volume with mirroring ``mirror``: seconds, tiles/s, peak RSS, max |diff|."""
    import zarr

    from volseg.inference.nnunet_grid import steps

    n_s, n_rss = measured([sys.executable, "-c", NNUNET, str(folder), str(tmp / f"v{side}.npy"),
                           str(tmp / f"n{side}.npy"), mirror], env) if "nnunet" in args.tools else (None, None)
    out = tmp / f"o{side}{mirror}.zarr"
    v_s, v_rss = measured([str(Path(sys.executable).with_name("volseg")), "predict", str(folder),
                           str(tmp / f"v{side}.zarr"), "-o", str(out), "--chunks", str(args.chunks),
                           "--tile", str(args.tile), "--quiet"] + (["--tta"] if mirror == "on" else []), env)
    diff = (float(np.abs(zarr.open_array(str(out / "0"), mode="r")[:] - np.load(tmp / f"n{side}.npy")).max())
            if n_s is not None else None)
    forwards = int(np.prod([len(s) for s in steps((side,) * 3, (args.patch,) * 3, 0.5)])) * (8 if mirror == "on" else 1)
    return {"side": side, "voxels": side**3, "mirror": mirror, "forwards": forwards,
            "nnunet_seconds": n_s and round(n_s, 1), "nnunet_forwards_per_s": n_s and round(forwards / n_s, 2),
            "nnunet_peak_rss_bytes": n_rss, "volseg_seconds": round(v_s, 1),
            "volseg_forwards_per_s": round(forwards / v_s, 2), "volseg_peak_rss_bytes": v_rss, "max_abs_diff": diff}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=int, nargs=2, default=(128, 256), help="the two volumes' sides (voxels)")
    ap.add_argument("--patch", type=int, default=32, help="the plans' patch side")
    ap.add_argument("--chunks", type=int, default=64, help="volseg --chunks")
    ap.add_argument("--tile", type=int, default=128, help="volseg --tile")
    ap.add_argument("--mirror", nargs="+", default=["off"], choices=["off", "on"],
                    help="nnU-Net's mirroring (volseg --tta) off, on, or both; 'on' runs 8 forwards per tile")
    ap.add_argument("--tools", nargs="+", default=["nnunet", "volseg"], choices=["nnunet", "volseg"],
                    help="run nnU-Net's predictor too (default), or volseg alone (its time and memory only)")
    ap.add_argument("--json", default=None, help="also write the JSON object to this file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    from nnunet_folder import dataset_for, make_folder, plans_for
    from scipy.ndimage import gaussian_filter

    from volseg.io import write_volume

    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = make_folder(tmp / "model", plans_for("CTNormalization", patch=(args.patch,) * 3),
                             dataset_for(("fibre", "sheet")), folds=(0,))
        for side in args.sides:
            rng = np.random.default_rng(side)
            data = (gaussian_filter(rng.normal(size=(side,) * 3), 2) * 8 + 0.5).astype(np.float32)
            np.save(tmp / f"v{side}.npy", data)
            write_volume(tmp / f"v{side}.zarr", data, chunks=args.chunks, spacing=(1.0, 1.0, 1.0), unit="micrometer")
            del data
            for mirror in args.mirror:
                rows.append(_compare(folder, tmp, side, mirror, args, env))
    first = [r for r in rows if r["side"] == args.sides[0] and r["mirror"] == args.mirror[0]][0]
    last = [r for r in rows if r["side"] == args.sides[1] and r["mirror"] == args.mirror[0]][0]
    result = {"patch": args.patch, "chunks": args.chunks, "tile": args.tile, "folds": 1, "mirror": args.mirror,
              "cpus": os.cpu_count(), "load_average_before": round(os.getloadavg()[0], 2), "rows": rows,
              "volseg_rss_growth": round(last["volseg_peak_rss_bytes"] / first["volseg_peak_rss_bytes"], 2)}
    if "nnunet" in args.tools:
        result.update(nnunet_rss_growth=round(last["nnunet_peak_rss_bytes"] / first["nnunet_peak_rss_bytes"], 2),
                      volseg_time_ratio_larger=round(last["volseg_seconds"] / last["nnunet_seconds"], 3))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
