"""Peak memory of ``volseg prepare`` on a big multi-page TIFF (default 2 GiB uint16).

Writes a TIFF stack page by page with tifffile (never holding the volume), runs
``volseg prepare STACK.tif -o OUT.zarr`` in a subprocess, and measures the subprocess's peak
resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss``, cross-checked by polling with psutil).
Then spot-checks a few slices of the output against the TIFF. Prints one JSON object and a table.

    python benchmarks/prepare_memory.py                    # 2 GiB, 1024 x 1024 x 1024 uint16
    python benchmarks/prepare_memory.py --gib 0.25 --json out.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_stack(path: Path, *, gib: float, side: int, dtype: str) -> tuple:
    """Write a (z, side, side) TIFF page by page; z chosen so the file holds ``gib`` GiB."""
    import tifffile

    itemsize = np.dtype(dtype).itemsize
    depth = max(2, int(round(gib * 2**30 / (side * side * itemsize))))
    rng = np.random.default_rng(0)
    base = rng.integers(0, 1000, (side, side)).astype(dtype)
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for z in range(depth):
            tw.write(base + np.asarray(z % 1000, dtype=dtype), contiguous=True)
    return (depth, side, side)


def run_prepare(src: Path, out: Path, *, chunks: int, workers: int | None) -> dict:
    """Run prepare in a child process and return its wall time and peak RSS figures."""
    import psutil

    cmd = [sys.executable, "-c", "from volseg.cli import main; main()", "prepare", str(src),
           "-o", str(out), "--chunks", str(chunks), "--quiet"]
    if workers:
        cmd += ["--workers", str(workers)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    watched, polled = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(recursive=True))
            polled = max(polled, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed with exit code {proc.returncode}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    return {"seconds": round(seconds, 1), "peak_rss_bytes": int(peak), "polled_rss_bytes": int(polled)}


def spot_check(src: Path, out: Path, shape: tuple) -> bool:
    import tifffile

    from volseg.io import open_volume

    vol = open_volume(out)
    with tifffile.TiffFile(src) as tif:
        for z in (0, shape[0] // 2, shape[0] - 1):
            if not np.array_equal(tif.pages[z].asarray(), vol[z].compute()):
                return False
    return tuple(vol.shape) == tuple(shape)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=2.0, help="TIFF size in GiB (default 2)")
    ap.add_argument("--side", type=int, default=1024, help="slice height and width (default 1024)")
    ap.add_argument("--dtype", default="uint16")
    ap.add_argument("--chunks", type=int, default=128)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None, help="where to put the files (default: a temp dir)")
    ap.add_argument("--json", default=None, help="also write the JSON object to this file")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="volseg-prepmem-") as tmp:
        src, out = Path(tmp) / "stack.tif", Path(tmp) / "stack.zarr"
        t0 = time.perf_counter()
        shape = make_stack(src, gib=args.gib, side=args.side, dtype=args.dtype)
        make_seconds = time.perf_counter() - t0
        figures = run_prepare(src, out, chunks=args.chunks, workers=args.workers)
        ok = spot_check(src, out, shape)
        result = {"input_bytes": src.stat().st_size, "shape": list(shape), "dtype": args.dtype,
                  "chunks": args.chunks, "workers": args.workers, "make_seconds": round(make_seconds, 1),
                  **figures, "peak_rss_gib": round(figures["peak_rss_bytes"] / 2**30, 3),
                  "output_matches": ok}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(f"\n{'input':>10} {'shape':>18} {'seconds':>8} {'peak RSS':>10} {'matches':>8}")
    print(f"{result['input_bytes'] / 2**30:>8.2f}Gi {'x'.join(map(str, shape)):>18} "
          f"{result['seconds']:>8.1f} {result['peak_rss_gib']:>8.3f}Gi {str(ok):>8}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
