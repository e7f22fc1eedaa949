"""Many image/label pairs cut with the same options into one store (pairs in order), or one each."""

import numpy as np
import tifffile

from volseg.data.patchstore import PatchStore
from volseg.data.patchify_many import patchify_pairs
from volseg.data.sources import Pair


def test_merged_and_per_volume(tmp_path):
    pairs = []
    for k in range(2):
        image = np.full((8, 8, 16), k + 1, np.uint8)
        tifffile.imwrite(tmp_path / f"v{k}.tif", image)
        np.save(tmp_path / f"v{k}_label.npy", (image > 0).astype(np.uint8))
        pairs.append(Pair(f"v{k}", tmp_path / f"v{k}.tif", tmp_path / f"v{k}_label.npy"))
    merged = PatchStore.open(patchify_pairs(pairs, out=tmp_path / "all.zarr", patch=8))
    assert len(merged) == 4
    import zarr

    patches = zarr.open_group(str(tmp_path / "all.zarr"))["patches"][:]
    assert [int(p.max()) for p in patches] == [1, 1, 2, 2]  # the pairs' patches, in order
    folder = patchify_pairs(pairs, out=tmp_path / "each", per_volume=True, patch=8)
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".zarr") == ["v0.zarr", "v1.zarr"]
    assert len(PatchStore.open(folder / "v1.zarr")) == 2
