"""Volumes by URL: a store in the published scrolls' layout (Zarr v2, NGFF 0.4, 3 levels,
uint8, blosc) served by a real HTTP server and by moto's S3 server on 127.0.0.1; results equal
the same commands on the local copy, bytes are fetched once, faults are retried, bad URLs exit 2."""

import json
import time

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from remote_servers import CountingServer, free_port, moto_s3, upload, write_published_store
from volseg.cli import app
from volseg.models import build_model

pytestmark = pytest.mark.timeout(120)


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 255, (48, 48, 48), dtype=np.uint8)
    data[:16] = 0  # air: chunks of the fill value, not stored
    write_published_store(root / "site" / "scroll.zarr", data, chunks=16, levels=3, absent_value=0)
    labels = (data > 128).astype(np.uint8)
    gt = zarr.open_array(str(root / "site" / "gt.zarr"), mode="w", shape=labels.shape, chunks=(16, 16, 16),
                         dtype="uint8", zarr_format=2)
    gt[:] = labels
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    (root / "run").mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, root / "run" / "model.pt")
    return root


@pytest.fixture(scope="module")
def http(site):
    with CountingServer(site / "site") as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_remote_env(monkeypatch):
    """--storage-options/--cache set the environment of this (test) process: reset per test."""
    for name in ("VOLSEG_STORAGE_OPTIONS", "VOLSEG_CACHE", "VOLSEG_CACHE_SIZE"):
        monkeypatch.setenv(name, "")


PREDICT = ("--patch", "16", "--overlap", "0.5", "--stitch", "--chunks", "16", "--device", "cpu", "--quiet")


def test_info_over_http_names_levels_and_format(site, http):
    r = invoke("info", http.url + "/scroll.zarr", "--json", "-")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["levels"] == 3 and info["level_shapes"] == [[48, 48, 48], [24, 24, 24], [12, 12, 12]]
    assert info["zarr_format"] == 2 and info["ngff_version"] == "0.4" and info["chunks"] == [16, 16, 16]
    assert info["spacing"] == [7.91] * 3 and info["unit"] == "micrometer"
    r = invoke("info", http.url + "/scroll.zarr", "--level", "1", "--json", "-")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["shape"] == [24, 24, 24] and json.loads(r.stdout)["spacing"] == [15.82] * 3


def test_predict_from_http_equals_local_and_fetches_each_chunk_once(site, http, local_pred, tmp_path):
    http.reset()
    cache = tmp_path / "cache"
    out = tmp_path / "remote.zarr"
    r = invoke("predict", site / "run", http.url + "/scroll.zarr", "-o", out, *PREDICT, "--cache", cache)
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"))[:], local_pred)
    stored = sum(f.stat().st_size for f in (site / "site" / "scroll.zarr" / "0").glob("*.*.*"))
    fetched = http.chunk_bytes()
    assert 0 < fetched <= 1.05 * stored, (fetched, stored)
    # the cache folder is volseg's (marker written when created); a second pass through it
    # fetches nothing but metadata
    assert json.loads((cache / "volseg-cache.json").read_text())["format"] == "volseg-cache"
    http.reset()
    r = invoke("predict", site / "run", http.url + "/scroll.zarr", "-o", tmp_path / "again.zarr", *PREDICT,
               "--cache", cache)
    assert r.exit_code == 0, r.stderr
    assert http.metadata_only(), http.httpd.sent
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "again.zarr" / "0"))[:],
                                  local_pred)


def test_level_1_and_evaluate_on_urls_equal_local(site, http, tmp_path):
    for src, out in ((site / "site" / "scroll.zarr", tmp_path / "l.zarr"), (http.url + "/scroll.zarr", tmp_path / "r.zarr")):
        r = invoke("predict", site / "run", src, "-o", out, *PREDICT, "--level", "1")
        assert r.exit_code == 0, r.stderr
    a, b = zarr.open_group(str(tmp_path / "l.zarr")), zarr.open_group(str(tmp_path / "r.zarr"))
    np.testing.assert_array_equal(a["0"][:], b["0"][:])
    assert a["0"].shape == (24, 24, 24)
    assert b.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [15.82] * 3
    scores = []
    for gt in (site / "site" / "gt.zarr", http.url + "/gt.zarr"):
        r = invoke("evaluate", site / "site" / "gt.zarr", gt, "--metrics", "dice,voi", "--json", "-")
        assert r.exit_code == 0, r.stderr
        scores.append(json.loads(r.stdout))
    assert scores[0]["dice"] == scores[1]["dice"] == 1.0 and scores[0] == scores[1]


@pytest.fixture(scope="module")
def s3(site):
    with moto_s3() as endpoint:
        upload(site / "site" / "scroll.zarr", "s3://scrolls/scroll.zarr", endpoint)
        import s3fs

        s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint).mkdir("preds")
        yield endpoint


@pytest.fixture(scope="module")
def local_pred(site, tmp_path_factory):
    local = tmp_path_factory.mktemp("local") / "local.zarr"
    r = invoke("predict", site / "run", site / "site" / "scroll.zarr", "-o", local, *PREDICT)
    assert r.exit_code == 0, r.stderr
    return zarr.open_array(str(local / "0"))[:]


@pytest.mark.timeout(600)
@pytest.mark.slow  # moto's server takes ~10 s to start on a busy 2-core machine
def test_predict_from_s3_to_s3_equals_local_and_resumes(site, s3, local_pred, tmp_path):
    r = invoke("info", "s3://scrolls/scroll.zarr", "--json", "-")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["level_shapes"][2] == [12, 12, 12]
    out = tmp_path / "s3.zarr"
    r = invoke("predict", site / "run", "s3://scrolls/scroll.zarr", "-o", out, *PREDICT,
               "--storage-options", json.dumps({"endpoint_url": s3}))
    assert r.exit_code == 0, r.stderr
    np.testing.assert_array_equal(zarr.open_array(str(out / "0"))[:], local_pred)
    # output to S3: part 1 of 2, then the whole run resumes it and does only the rest
    dest = "s3://preds/run1/pred.zarr"
    r = invoke("predict", site / "run", "s3://scrolls/scroll.zarr", "-o", dest, *PREDICT, "--part", "1/2", "--json", "-")
    assert r.exit_code == 0, r.stderr
    first = json.loads(r.stdout)["chunks_written"]
    r = invoke("predict", site / "run", "s3://scrolls/scroll.zarr", "-o", dest, *PREDICT, "--json", "-")
    assert r.exit_code == 0, r.stderr
    again = json.loads(r.stdout)
    assert again["chunks_done_before"] == first and again["chunks_written"] == 27 - first
    back = volseg_open(dest)
    np.testing.assert_array_equal(back, local_pred)
    # other settings are refused, naming the URL
    r = invoke("predict", site / "run", "s3://scrolls/scroll.zarr", "-o", dest, *PREDICT, "--overlap", "0.25")
    assert r.exit_code == 2 and dest in r.stderr and "other settings" in r.stderr


def volseg_open(url):
    import volseg

    return volseg.open_volume(url).compute()


def test_faults_are_retried_and_reported_with_debug(site, local_pred, tmp_path, caplog):
    seen: dict = {}

    def fault(path, n):  # the first request of every chunk fails: 503 or a dropped connection
        if path.rsplit("/", 1)[-1][:1].isdigit() and path not in seen:
            seen[path] = 1
            return "503" if len(seen) % 2 else "drop"
        return None

    with CountingServer(site / "site", fault=fault) as server:
        r = invoke("predict", site / "run", server.url + "/scroll.zarr", "-o", tmp_path / "f.zarr", *PREDICT, "--debug")
    assert r.exit_code == 0, r.stderr
    retries = [m for m in caplog.messages if m.startswith("retry")]  # --debug shows them on stderr
    assert any("503" in m for m in retries) and len(retries) >= len(seen) // 2, retries
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "f.zarr" / "0"))[:], local_pred)


@pytest.mark.parametrize("case", ["refused", "404", "403", "not-zarr", "level", "persistent-503"])
def test_bad_urls_exit_2_naming_the_url_within_seconds(site, tmp_path, case, monkeypatch):
    monkeypatch.setenv("VOLSEG_RETRIES", "1")  # the default 4 tries take 1.5 s more
    fault = {"403": lambda p, n: "403", "persistent-503": lambda p, n: "503" if "/0/" in p else None}.get(case)
    (site / "site" / "plain").mkdir(exist_ok=True)
    (site / "site" / "plain" / "index.txt").write_text("hello")
    with CountingServer(site / "site", fault=fault) as server:
        url = {"refused": f"http://127.0.0.1:{free_port()}/scroll.zarr", "404": server.url + "/nothing.zarr",
               "403": server.url + "/scroll.zarr", "not-zarr": server.url + "/plain",
               "level": server.url + "/scroll.zarr", "persistent-503": server.url + "/scroll.zarr"}[case]
        args = ("--level", "3") if case == "level" else ()
        t0 = time.perf_counter()
        r = invoke("predict", site / "run", url, "-o", tmp_path / "o.zarr", *PREDICT, *args)
        took = time.perf_counter() - t0
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0], r.stderr
    assert took < 15, took
    if case == "level":
        assert "0..2" in lines[0]
    if case == "403":
        assert "403" in lines[0]


def test_absent_chunks_are_not_fetched_nor_computed_with_skip_value(site, http, tmp_path):
    absent = [f"{i}.{j}.{k}" for i in range(1) for j in range(3) for k in range(3)]
    assert not any((site / "site" / "scroll.zarr" / "0" / a).exists() for a in absent)  # air: not stored
    local = tmp_path / "local.zarr"
    r = invoke("predict", site / "run", site / "site" / "scroll.zarr", "-o", local, *PREDICT, "--skip-value", "0")
    assert r.exit_code == 0, r.stderr
    http.reset()
    r = invoke("predict", site / "run", http.url + "/scroll.zarr", "-o", tmp_path / "r.zarr", *PREDICT,
               "--skip-value", "0", "--json", "-")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["patches_skipped"] > 0
    assert not any(path.endswith("/0/" + a) and n for path, n in http.httpd.sent.items() for a in absent)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "r.zarr" / "0"))[:],
                                  zarr.open_array(str(local / "0"))[:])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_of_a_predict_writing_to_s3_then_rerun_is_identical(site, s3, local_pred, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    import s3fs

    volseg_exe = os.path.join(os.path.dirname(sys.executable), "volseg")
    dest = "s3://preds/killed/pred.zarr"
    cmd = [volseg_exe, "predict", str(site / "run"), "s3://scrolls/scroll.zarr", "-o", dest, *PREDICT,
           "--workers", "1", "--json", "-"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        fs.invalidate_cache()
        if len(fs.ls("preds/killed/pred.zarr/volseg_markers", detail=False) if
               fs.exists("preds/killed/pred.zarr/volseg_markers") else []) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    fs.invalidate_cache()
    done = len(fs.ls("preds/killed/pred.zarr/volseg_markers", detail=False)) - 1  # minus zarr.json
    assert 0 < done < 27
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["chunks_done_before"] == done and result["chunks_written"] == 27 - done
    np.testing.assert_array_equal(volseg_open(dest), local_pred)


@pytest.fixture(scope="module")
def damaged_site(site):
    """A copy of the published store and of gt.zarr, each with one truncated chunk."""
    import shutil

    root = site / "damaged"
    for name in ("scroll.zarr", "gt.zarr"):
        shutil.copytree(site / "site" / name, root / name)
    for chunk in (root / "scroll.zarr" / "0" / "1.1.1", root / "gt.zarr" / "2.0.1"):
        chunk.write_bytes(chunk.read_bytes()[:12])
    with CountingServer(root) as server:
        yield server


@pytest.mark.parametrize("command", ["info", "predict", "prepare", "patchify", "postprocess", "evaluate",
                                     "evaluate-labels"])
def test_a_damaged_chunk_over_http_names_the_url_and_the_chunk_key(site, damaged_site, tmp_path, command):
    url, gt = damaged_site.url + "/scroll.zarr", damaged_site.url + "/gt.zarr"
    out = tmp_path / "out.zarr"
    args = {"info": ("info", url),
            "predict": ("predict", site / "run", url, "-o", out, *PREDICT),
            "prepare": ("prepare", url, "-o", out, "--chunks", "16", "--quiet"),
            "patchify": ("patchify", url, "-o", out, "--patch", "16", "--quiet"),
            "postprocess": ("postprocess", url, "-o", out, "--threshold", "128", "--quiet"),
            "evaluate": ("evaluate", url, site / "site" / "gt.zarr", "--metrics", "dice", "--quiet"),
            "evaluate-labels": ("evaluate", site / "site" / "gt.zarr", gt, "--metrics", "dice", "--quiet")}[command]
    r = invoke(*args)
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    lines = r.stderr.strip().splitlines()
    name, key = (gt, "2.0.1") if command == "evaluate-labels" else (url + "/0", "1.1.1")
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"error: {name}: has a damaged chunk {key} ("), lines[0]
    assert lines[0].endswith("restore it or write it again") and "Traceback" not in r.stderr + r.stdout


def test_postprocess_of_a_url_equals_the_local_result(site, http, tmp_path):
    outs = []
    for src, out in ((site / "site" / "scroll.zarr", tmp_path / "l.zarr"), (http.url + "/scroll.zarr", tmp_path / "r.zarr")):
        r = invoke("postprocess", src, "-o", out, "--threshold", "128", "--min-size", "3", "--quiet")
        assert r.exit_code == 0, r.stderr
        outs.append(zarr.open_array(str(out / "0"))[:])
    np.testing.assert_array_equal(outs[0], outs[1])
    assert outs[0].any()


class _HtmlEverywhere(__import__("http.server").server.BaseHTTPRequestHandler):
    """A web server answering every path with the same HTML page (no 404s)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = b"<html><body>welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(body)

    do_HEAD = do_GET


def test_unreachable_s3_and_html_servers_print_exactly_one_line(tmp_path):
    """In a real process (interpreter shutdown included): no 'Exception ignored in <coroutine>'
    after the error, no ZarrUserWarning before it."""
    import http.server
    import os
    import subprocess
    import sys
    import threading
    from pathlib import Path

    volseg = str(Path(sys.executable).with_name("volseg"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HtmlEverywhere)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "VOLSEG_RETRIES": "0", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    html = f"http://127.0.0.1:{server.server_address[1]}/scroll.zarr"
    try:
        for url, expect in (("s3://no-such-bucket/scroll.zarr", "Could not connect to the endpoint URL"),
                            (html, "is not JSON (a web page?)")):
            proc = subprocess.run([volseg, "info", url], capture_output=True, text=True, env=env, timeout=60)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {url}"), proc.stderr
            assert expect in proc.stderr
    finally:
        server.shutdown()
        server.server_close()
