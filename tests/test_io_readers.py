"""open_volume / read_meta on every supported input kind: exact values, dtype, order, spacing, errors."""

import pickle

import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr

from volseg.errors import VolsegError
from volseg.io import open_volume, read_meta, write_label_image, write_volume

SHAPE = (37, 53, 29)  # deliberately not a multiple of any chunk size
DTYPES = ["uint8", "uint16", "int16", "float32"]


def make_volume(dtype, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(0, 100, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape, dtype=np.int64).astype(dtype)


def write_input(kind, tmp_path, vol, spacing=(1.0, 1.0, 1.0)):
    """Write ``vol`` (z, y, x) as an input of ``kind``; return its path."""
    if kind == "tiff":
        path = tmp_path / "vol.tif"
        tifffile.imwrite(path, vol)
    elif kind == "tiff-pages":  # pages written one by one (each its own 'shaped' series)
        path = tmp_path / "pages.tiff"
        with tifffile.TiffWriter(path) as tw:
            for page in vol:
                tw.write(page)
    elif kind == "tiff-folder":
        path = tmp_path / "slices"
        path.mkdir()
        for z, page in enumerate(vol):
            tifffile.imwrite(path / f"slice_{z}.tif", page)
    elif kind == "npy":
        path = tmp_path / "vol.npy"
        np.save(path, vol)
    elif kind == "nifti":
        path = tmp_path / "vol.nii.gz"
        header = nib.Nifti1Header(endianness=">")
        img = nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag(list(spacing[::-1]) + [1.0]), header=header)
        img.header.set_data_dtype(vol.dtype.newbyteorder(">"))
        img.header.set_zooms(spacing[::-1])
        img.header.set_xyzt_units("mm")
        nib.save(img, path)
    elif kind in ("zarr-v2", "zarr-v3"):
        path = tmp_path / f"{kind}.zarr"
        z = zarr.open_array(str(path), mode="w", shape=vol.shape, chunks=(10, 16, 8), dtype=vol.dtype,
                            zarr_format=int(kind[-1]))
        z[:] = vol
    elif kind == "ome-zarr":
        path = write_volume(tmp_path / "ome.zarr", vol, chunks=16, spacing=spacing)
    else:
        raise ValueError(kind)
    return path


KINDS = ["tiff", "tiff-pages", "tiff-folder", "npy", "nifti", "zarr-v2", "zarr-v3", "ome-zarr"]
FORMATS = {"tiff-pages": "tiff", "zarr-v2": "zarr", "zarr-v3": "zarr"}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_open_volume_is_exact(kind, dtype, tmp_path):
    vol = make_volume(dtype)
    path = write_input(kind, tmp_path, vol)
    arr = open_volume(path)
    assert arr.shape == SHAPE and arr.dtype == vol.dtype and arr.dtype.isnative
    np.testing.assert_array_equal(arr.compute(), vol)
    meta = read_meta(path)
    assert meta.format == FORMATS.get(kind, kind)
    assert meta.shape == SHAPE and meta.dtype == vol.dtype and meta.levels == 1
    assert len(meta.chunks) == 3


def test_big_endian_nifti_int16_axes_and_spacing(tmp_path):
    vol = make_volume("int16")
    path = write_input("nifti", tmp_path, vol, spacing=(2.5, 0.7, 0.5))
    img = nib.load(path)
    assert img.header.endianness == ">" and img.get_data_dtype().byteorder == ">"
    arr = open_volume(path)
    assert arr.dtype == np.int16
    np.testing.assert_array_equal(arr.compute(), vol)
    # documented axis order: open_volume(p)[z, y, x] == dataobj[x, y, z]
    assert arr[3, 5, 7].compute() == np.asarray(img.dataobj)[7, 5, 3]
    meta = read_meta(path)
    assert meta.spacing == (2.5, 0.7, 0.5) and meta.unit == "millimeter"


def test_4d_nifti_needs_a_channel(tmp_path):
    vol = make_volume("float32", (4, 5, 6))
    data = np.stack([vol, vol + 1, vol + 2], axis=-1).transpose(2, 1, 0, 3)  # (x, y, z, c)
    path = tmp_path / "multi.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(VolsegError, match="--channel") as exc:
        open_volume(path)
    assert str(path) in str(exc.value)
    np.testing.assert_array_equal(open_volume(path, channel=2).compute(), vol + 2)
    with pytest.raises(VolsegError, match="out of range"):
        open_volume(path, channel=3)


def test_tiff_folder_natural_sort(tmp_path):
    folder = tmp_path / "slices"
    folder.mkdir()
    for z in range(12):
        tifffile.imwrite(folder / f"slice_{z}.tif", np.full((4, 5), z, np.uint8))
    (folder / "notes.txt").write_text("ignored")
    arr = open_volume(folder).compute()
    assert list(arr[:, 0, 0]) == list(range(12))  # slice_2 before slice_10


def test_multipage_tiff_is_read_lazily_in_chunks(tmp_path):
    vol = make_volume("uint16", (40, 8, 9))
    path = write_input("tiff", tmp_path, vol)
    arr = open_volume(path)
    np.testing.assert_array_equal(arr[17:23, 2:5].compute(), vol[17:23, 2:5])
    again = pickle.loads(pickle.dumps(arr))  # sources reopen their file lazily (processes/distributed)
    np.testing.assert_array_equal(again.compute(), vol)


def test_ome_zarr_spacing_levels_and_sub_paths(tmp_path):
    vol = make_volume("uint8")
    path = write_volume(tmp_path / "scroll.zarr", vol, chunks=16, levels=3, spacing=(4.0, 2.0, 2.0), unit="um")
    meta = read_meta(path)
    assert (meta.format, meta.levels, meta.spacing, meta.unit, meta.chunks) == \
        ("ome-zarr", 3, (4.0, 2.0, 2.0), "micrometer", (16, 16, 16))
    labels = (vol > 128).astype(np.uint8)
    write_label_image(path, "surface", labels)
    np.testing.assert_array_equal(open_volume(path / "labels" / "surface").compute(), labels)
    np.testing.assert_array_equal(open_volume(path / "0").compute(), vol)  # the plain level array


def test_ome_zarr_v2_ngff_04_with_channel_axis(tmp_path):
    vol = make_volume("uint16", (3, 6, 7, 8))
    root = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=vol.shape, chunks=(1, 3, 7, 8), dtype=vol.dtype)[:] = vol
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [
        {"name": "c", "type": "channel"}, {"name": "z", "type": "space", "unit": "micrometer"},
        {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 3, 2, 2]}]}]}]
    with pytest.raises(VolsegError, match="channels"):
        open_volume(tmp_path / "old.zarr")
    np.testing.assert_array_equal(open_volume(tmp_path / "old.zarr", channel=1).compute(), vol[1])
    meta = read_meta(tmp_path / "old.zarr", channel=0)
    assert meta.spacing == (3.0, 2.0, 2.0) and meta.unit == "micrometer" and meta.format == "ome-zarr"


def _bad_inputs(tmp_path):
    cases = {"missing": tmp_path / "nope.tif"}
    cases["suffix"] = tmp_path / "vol.png"
    cases["suffix"].write_bytes(b"\x89PNG")
    cases["2d-tiff"] = tmp_path / "flat.tif"
    tifffile.imwrite(cases["2d-tiff"], np.zeros((5, 6), np.uint8))
    cases["2d-npy"] = tmp_path / "flat.npy"
    np.save(cases["2d-npy"], np.zeros((5, 6), np.uint8))
    cases["empty-folder"] = tmp_path / "empty"
    cases["empty-folder"].mkdir()
    mixed = cases["mixed"] = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "s_1.tif", np.zeros((5, 6), np.uint8))
    tifffile.imwrite(mixed / "s_2.tif", np.zeros((5, 7), np.uint8))
    cases["corrupt-tiff"] = tmp_path / "corrupt.tif"
    cases["corrupt-tiff"].write_bytes(b"II*\x00" + b"\xff" * 64)
    cases["4d-nifti"] = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), cases["4d-nifti"])
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w", zarr_format=3)
    group.create_array("raw", shape=(2, 2, 2), dtype="u1")
    cases["group"] = tmp_path / "group.zarr"
    cases["object-npy"] = tmp_path / "obj.npy"
    np.save(cases["object-npy"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return cases


BAD = ["missing", "suffix", "2d-tiff", "2d-npy", "empty-folder", "mixed", "corrupt-tiff", "4d-nifti",
       "group", "object-npy"]
BAD_WORDS = {"missing": "does not exist", "suffix": "unsupported", "2d-tiff": "2D", "2d-npy": "2D",
             "empty-folder": "empty folder", "mixed": "must match", "corrupt-tiff": "not a readable TIFF",
             "4d-nifti": "--channel", "group": "not an image", "object-npy": "npy"}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_raise_volseg_error_naming_the_path(case, tmp_path):
    path = _bad_inputs(tmp_path)[case]
    with pytest.raises(VolsegError) as exc:
        open_volume(path).compute()
    assert str(path.parent) in str(exc.value)
    assert BAD_WORDS[case] in exc.value.message
    assert "\n" not in str(exc.value)


def test_truncated_tiff_data_is_a_volseg_error(tmp_path):
    vol = make_volume("uint16", (6, 64, 64))
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, vol)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(VolsegError, match="cut.tif"):
        open_volume(path).compute()


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_reads_ome_zarr_written_by_ome_zarr_py(tmp_path):
    from ome_zarr.writer import write_image

    vol = make_volume("uint16", (8, 10, 12))
    write_image(vol, zarr.open_group(str(tmp_path / "ext.zarr"), mode="w"), axes="zyx")
    meta = read_meta(tmp_path / "ext.zarr")
    assert meta.format == "ome-zarr" and meta.levels > 1 and meta.shape == vol.shape
    np.testing.assert_array_equal(open_volume(tmp_path / "ext.zarr").compute(), vol)


def test_big_endian_zarr_v3_array(tmp_path):
    vol = make_volume("int16").astype(">i2")
    z = zarr.create_array(str(tmp_path / "be.zarr"), shape=vol.shape, dtype=">i2", zarr_format=3)
    z[:] = vol
    arr = open_volume(tmp_path / "be.zarr")
    assert arr.dtype == np.int16 and arr.dtype.isnative
    np.testing.assert_array_equal(arr.compute(), vol)


@pytest.mark.parametrize("zarr_format, key", [(3, "c/1/0/1"), (2, "1.0.1")])
def test_a_damaged_chunk_names_the_array_and_its_key(tmp_path, zarr_format, key):
    vol = make_volume("float32", (16, 16, 16))
    arr = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=vol.shape, chunks=(8, 8, 8),
                          dtype="float32", zarr_format=zarr_format)
    arr[:] = vol
    chunk = tmp_path / "v.zarr" / key
    chunk.write_bytes(chunk.read_bytes()[:10])  # truncated
    data = open_volume(tmp_path / "v.zarr")
    assert np.array_equal(data[:8].compute(), vol[:8])  # the sound chunks still read
    with pytest.raises(VolsegError) as err:
        data.compute()
    assert err.value.path == str(tmp_path / "v.zarr")
    assert err.value.message.startswith(f"has a damaged chunk {key} (")
    assert err.value.message.endswith("restore it or write it again")


def test_a_damaged_chunk_of_an_ome_zarr_level_names_the_level(tmp_path):
    vol = make_volume("uint8", (16, 16, 16))
    write_volume(tmp_path / "v.zarr", vol, chunks=8)
    chunk = tmp_path / "v.zarr" / "0" / "c" / "1" / "1" / "0"
    chunk.write_bytes(b"garbage")
    with pytest.raises(VolsegError, match="damaged chunk c/1/1/0") as err:
        open_volume(tmp_path / "v.zarr")[8:, 8:, :8].compute()
    assert err.value.path == str(tmp_path / "v.zarr" / "0")
    err2 = pytest.raises(VolsegError, open_volume(tmp_path / "v.zarr" / "0").compute)
    assert err2.value.path == str(tmp_path / "v.zarr" / "0") and "c/1/1/0" in err2.value.message


@pytest.mark.parametrize("kind", ["npy", "zarr"])
@pytest.mark.parametrize("data, expect", [
    (np.zeros((0, 16, 16), np.float32), "is empty (shape 0x16x16); a volume needs at least one voxel"),
    (np.ones((4, 5, 6), np.complex64), "has dtype complex64; volseg reads real numbers"),
])
def test_empty_and_complex_volumes_are_refused_by_every_reader(tmp_path, kind, data, expect):
    path = tmp_path / f"v.{kind}"
    if kind == "npy":
        np.save(path, data)
    else:
        zarr.open_array(str(path), mode="w", shape=data.shape, dtype=data.dtype, chunks=(4, 4, 4))
    for read in (open_volume, read_meta):
        with pytest.raises(VolsegError, match=expect.replace("(", r"\(").replace(")", r"\)")) as err:
            read(path)
        assert err.value.path == str(path)


def test_npy_files_open_from_many_threads_at_once(tmp_path):
    # np.load's header parse (ast.literal_eval) raced between threads on CPython < 3.11.8 (gh-106905)
    from concurrent.futures import ThreadPoolExecutor

    from volseg.io import open_volume

    paths = []
    for i in range(8):
        np.save(tmp_path / f"v{i}.npy", np.full((4, 5, 6), i, np.float32))
        paths.append(tmp_path / f"v{i}.npy")
    with ThreadPoolExecutor(8) as pool:
        sums = list(pool.map(lambda p: float(np.asarray(open_volume(p)).sum()), paths * 25))
    assert sums == [i * 120.0 for i in range(8)] * 25
