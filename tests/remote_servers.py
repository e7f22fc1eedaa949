"""Real servers on 127.0.0.1 for the remote tests: a static HTTP server that counts the bytes
it sends and can fail requests, and moto's S3 server. Both on free ports, stopped by the tests."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np


def write_published_store(path, data, *, chunks=16, levels=3, spacing=(7.91, 7.91, 7.91),
                          absent_value=None) -> Path:
    """An OME-Zarr in the published scrolls' layout: Zarr v2, NGFF 0.4 multiscales, levels
    ``0..levels-1`` (2x2x2 mean), uint8, blosc. With ``absent_value``, chunks equal to it
    everywhere are not stored (the store's fill value)."""
    import zarr
    import numcodecs

    path = Path(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    datasets, level = [], np.asarray(data, np.uint8)
    for k in range(levels):
        if k:
            p = [(0, s % 2) for s in level.shape]
            x = np.pad(level, p, mode="edge").astype(np.float32)
            level = x.reshape(x.shape[0] // 2, 2, x.shape[1] // 2, 2, x.shape[2] // 2, 2).mean((1, 3, 5))
            level = np.round(level).astype(np.uint8)
        arr = root.create_array(str(k), shape=level.shape, chunks=(chunks,) * 3, dtype="uint8",
                                fill_value=absent_value or 0, compressors=numcodecs.Blosc(cname="zstd", clevel=3),
                                config={"write_empty_chunks": absent_value is None})
        arr[:] = level
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": [s * 2**k for s in spacing]}]})
    root.attrs["multiscales"] = [{"version": "0.4", "name": "scroll", "datasets": datasets,
                                  "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]}]
    return path


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def list_directory(self, path):  # plain HTTP object servers do not list folders
        self.send_error(404)
        return None

    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests.append(self.path)
            n = len(server.requests)
            fault = server.fault(self.path, n) if server.fault else None
        if fault == "503":
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "drop":
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        if fault == "403":
            self.send_error(403)
            return
        super().do_GET()

    def copyfile(self, source, outputfile):
        data = source.read()
        with self.server.lock:
            self.server.sent[self.path] = self.server.sent.get(self.path, 0) + len(data)
        outputfile.write(data)


class CountingServer:
    """``http.server`` over ``root`` on 127.0.0.1 (a free port), counting bytes per path.

    ``fault(path, n) -> None | "503" | "drop" | "403"`` decides the fate of request ``n``."""

    def __init__(self, root, fault=None):
        handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.lock = threading.Lock()
        self.httpd.requests, self.httpd.sent, self.httpd.fault = [], {}, fault
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def reset(self):
        with self.httpd.lock:
            self.httpd.requests.clear()
            self.httpd.sent.clear()

    def chunk_bytes(self) -> int:
        """Bytes sent for chunk objects (not metadata)."""
        return sum(v for k, v in self.httpd.sent.items() if not k.rsplit("/", 1)[-1].startswith((".z", "zarr.json")))

    def metadata_only(self) -> bool:
        return self.chunk_bytes() == 0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_s3():
    """moto's S3 server on 127.0.0.1 with dummy credentials in the environment; yields its URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_ENDPOINT_URL": url, "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        yield url
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def upload(local: Path, bucket_url: str, endpoint: str) -> None:
    """Copy a local store into S3 object by object."""
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint)
    bucket = bucket_url.split("://", 1)[1].split("/", 1)[0]
    if not fs.exists(bucket):
        fs.mkdir(bucket)
    target = bucket_url.split("://", 1)[1]
    for f in Path(local).rglob("*"):
        if f.is_file():
            fs.pipe(f"{target}/{f.relative_to(local).as_posix()}", f.read_bytes())
