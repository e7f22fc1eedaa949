"""Bytes fetched over HTTP by ``volseg predict --stitch`` on a remote OME-Zarr, vs the bytes it needs.

A store in the published scrolls' layout (Zarr v2, NGFF 0.4, uint8, blosc) is served by a
counting ``http.server`` on 127.0.0.1. Measured (chunk objects only; metadata excluded):

* ``volseg``: ``predict --stitch`` over level 0 (per-process chunk cache + on-disk cache),
  bytes fetched / stored bytes of the chunks the run needs (every chunk here);
* ``volseg rerun``: the same command again with the disk cache warm (``--cache``);
* ``naive``: each patch's region read straight through zarr's uncached ``FsspecStore`` (what a
  per-patch reader does: a patch touches up to 8 or 27 chunks, each fetched again and again).

    .venv/bin/python benchmarks/remote_fetch.py [--size 96] [--chunk 32] [--patch 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--chunk", type=int, default=32)
    ap.add_argument("--patch", type=int, default=32)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch
    import zarr
    from zarr.storage import FsspecStore

    import volseg
    from volseg.geometry import stride_from_overlap
    from volseg.inference.plan import Plan
    from volseg.models import build_model
    from remote_servers import CountingServer, write_published_store

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        data = (rng.normal(120, 30, (args.size,) * 3)).clip(0, 255).astype(np.uint8)
        store = write_published_store(tmp / "site" / "scroll.zarr", data, chunks=args.chunk, levels=3)
        stored = sum(f.stat().st_size for f in (store / "0").glob("*.*.*"))
        torch.manual_seed(0)
        cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
        (tmp / "run").mkdir()
        torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                    "state_dict": build_model(cfg).state_dict()}, tmp / "run" / "model.pt")
        rows = {}
        with CountingServer(tmp / "site") as server:
            url = server.url + "/scroll.zarr"
            from volseg.io.remote import configure

            configure(cache=tmp / "cache")
            for name, out in (("volseg", "a.zarr"), ("volseg rerun (disk cache)", "b.zarr")):
                server.reset()
                from volseg.inference import cache as memcache

                memcache._CACHE.clear()
                memcache._STATE["bytes"] = 0
                t0 = time.perf_counter()
                volseg.predict(tmp / "run", url, str(tmp / out), *volseg.predict_options(
                    patch=args.patch, overlap=args.overlap, stitch=True, chunks=args.chunk, device="cpu", quiet=True))
                rows[name] = {"fetched_bytes": server.chunk_bytes(), "seconds": round(time.perf_counter() - t0, 2)}
            server.reset()
            patch = (args.patch,) * 3
            plan = Plan.build(data.shape, patch, stride_from_overlap(patch, args.overlap), (args.chunk,) * 3)
            arr = zarr.open_array(FsspecStore.from_url(url + "/0", read_only=True), mode="r")
            t0 = time.perf_counter()
            origins = list(itertools.product(*plan.starts))
            for o in origins:
                arr[tuple(slice(int(a), int(a) + p) for a, p in zip(o, patch))]
            rows["naive per-patch (uncached FsspecStore)"] = {"fetched_bytes": server.chunk_bytes(),
                                                              "seconds": round(time.perf_counter() - t0, 2)}
        for r in rows.values():
            r["ratio"] = round(r["fetched_bytes"] / stored, 3)
        result = {"volume": [args.size] * 3, "chunks": [args.chunk] * 3, "patch": list(patch),
                  "overlap": args.overlap, "patches": int(len(origins)), "stored_chunk_bytes": stored,
                  "rows": [{"method": k, **v} for k, v in rows.items()]}
    print(json.dumps(result))
    print(f"\n{'method':42s} {'fetched MiB':>12s} {'x needed':>9s} {'seconds':>8s}")
    for k, v in rows.items():
        print(f"{k:42s} {v['fetched_bytes'] / 2**20:12.2f} {v['ratio']:9.3f} {v['seconds']:8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
