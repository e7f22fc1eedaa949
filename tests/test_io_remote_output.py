"""Outputs at URLs (moto S3): created with the root metadata last, resumed with the same
settings, refused with others, complete once every marker object is there."""

import json

import pytest

from volseg.errors import VolsegError
from volseg.io.markers import MARKERS
from volseg.io.remote_output import finish_remote_output, open_remote_output


def _create(path, attrs):
    path.mkdir(parents=True)
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                "attributes": {"volseg": attrs}}))
    (path / "data").mkdir()
    (path / "data" / "zarr.json").write_text("{}")


def test_create_resume_refuse_finish():
    import s3fs

    from remote_servers import moto_s3

    with moto_s3() as endpoint:
        fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
        fs.mkdir("remote-output")  # moto keeps buckets per process: one name per test file
        url = "s3://remote-output/out.zarr"
        out, markers, resumed = open_remote_output(url, settings={"a": 1}, create=_create, total=2)
        assert (out, resumed) == (url, False)
        assert fs.exists(f"remote-output/out.zarr/{MARKERS}/zarr.json") and fs.exists("remote-output/out.zarr/data/zarr.json")
        markers.mark((0, 0, 0))
        assert finish_remote_output(url, total=2) is False
        _, again, resumed = open_remote_output(url, settings={"a": 1}, create=_create, total=2)
        assert resumed and again.done() == {(0, 0, 0)}
        with pytest.raises(VolsegError, match=r"exists with other settings: a=1 \(now 2\); pass --overwrite"):
            open_remote_output(url, settings={"a": 2}, create=_create, total=2)
        again.mark((0, 0, 1))
        assert finish_remote_output(url, total=2) is True
        assert json.loads(fs.cat("remote-output/out.zarr/zarr.json"))["attributes"]["volseg"]["complete"] is True
        with pytest.raises(VolsegError, match="plain HTTP is read-only"):
            open_remote_output("http://example.org/o.zarr", settings={}, create=_create)
