"""The one task executor on real Dask schedulers, and the execution options' parsing."""

import os
import pickle

import pytest

from volseg.errors import VolsegError
from volseg.parallel import Execution, parse_part, parse_scheduler, parse_workers


def square(x):
    return x * x


def refuse(x):
    raise VolsegError(f"block-{x}", "bad block")


def pid(_):
    return os.getpid()


def _index(item):
    return item


def _ex(scheduler="threads", workers=2):
    return Execution.parse(scheduler=scheduler, workers=workers, quiet=True).executor()


@pytest.mark.parametrize("scheduler", ["synchronous", "threads", "processes"])
def test_map_keeps_order_on_local_schedulers(scheduler):
    with _ex(scheduler) as ex:
        assert ex.map(square, range(7)) == [k * k for k in range(7)]
        assert ex.map(_index, [(1, 2, 3), [4, 5]]) == [(1, 2, 3), [4, 5]]  # items stay literal


def test_map_on_a_local_cluster_of_worker_processes():
    with _ex("distributed", 1) as ex:
        assert ex.map(square, [3, 1, 2]) == [9, 1, 4]
        dsk = {("a", 0): (square, 4), ("b", 0): (square, ("a", 0))}
        assert ex.get(dsk, [("b", 0), ("a", 0)]) == [256, 16]
        assert ex.client is not None and len(ex.client.scheduler_info()["workers"]) == 1


def test_map_on_an_existing_cluster_address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with _ex(cluster.scheduler_address) as ex:
            assert ex.map(square, [4, 5]) == [16, 25]


def test_unreachable_cluster_is_a_scheduler_error_on_first_use(monkeypatch):
    monkeypatch.setenv("VOLSEG_CONNECT_TIMEOUT", "1s")
    with _ex("tcp://127.0.0.1:1") as ex:  # opening connects to nothing
        assert ex.map(square, []) == []
        with pytest.raises(VolsegError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1") as err:
            ex.map(square, [1])
    assert err.value.path == "--scheduler"


def test_one_process_pool_serves_every_computation_of_a_command():
    """``processes`` keeps one spawn-started pool: graphs and maps run in the same worker."""
    dsk = {("pid", k): (pid, k) for k in range(3)}
    with _ex("processes", 1) as ex:
        first = ex.get(dsk, list(dsk))
        second = ex.get(dsk, list(dsk))
        mapped = ex.map(pid, range(3))
    assert len(set(first + second + mapped)) == 1 and first[0] != os.getpid()
    with _ex("processes", 1) as other:  # a new command gets a new pool
        assert other.map(pid, [0]) != first[:1]


def test_nothing_is_started_before_the_first_task():
    with _ex("processes") as ex:
        assert ex.map(square, []) == [] and ex.get({}, []) == []
        assert ex._pool is None and ex.client is None
    with _ex("distributed") as ex:
        assert ex._client is None


class _Bar:
    def __init__(self):
        self.n = 0

    def advance(self, n=1):
        self.n += n


@pytest.mark.parametrize("scheduler", ["synchronous", "threads", "processes"])
def test_get_advances_the_bar_on_counted_keys_only(scheduler):
    dsk = {("g", 0): (square, 2), ("g", 1): (square, 3),
           ("final", 0): (sum, [("g", 0), ("g", 1)]), ("final", 1): (square, ("g", 1))}
    bar = _Bar()
    with _ex(scheduler) as ex:
        got = ex.get(dsk, [("final", 0), ("final", 1), ("g", 0)], bar=bar, counts=lambda k: k[0] == "final")
    assert got == [13, 81, 4] and bar.n == 2


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_volseg_error_crosses_workers(scheduler):
    with _ex(scheduler, 1) as ex, pytest.raises(VolsegError, match="block-1: bad block"):
        ex.map(refuse, [1])


def test_volseg_error_pickles():
    err = pickle.loads(pickle.dumps(VolsegError("a.tif", "broken")))
    assert (err.path, err.message, str(err)) == ("a.tif", "broken", "a.tif: broken")


@pytest.mark.parametrize("per_batch", [1, 2, 5])
@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_layers_yield_every_layer_in_order(scheduler, per_batch):
    with _ex(scheduler) as ex:
        layers = list(ex.layers(_index, (3, 2, 2), per_batch=per_batch))
    assert [iz for iz, _ in layers] == [0, 1, 2]
    for iz, results in layers:
        assert results == [(iz, 0, 0), (iz, 0, 1), (iz, 1, 0), (iz, 1, 1)]


@pytest.mark.parametrize("text,expected", [(None, None), ("1/1", (0, 1)), ("2/3", (1, 3)), ("3/3", (2, 3))])
def test_parse_part(text, expected):
    assert parse_part(text) == expected
    assert Execution.parse(part=text).part == expected


@pytest.mark.parametrize("bad", ["3/2", "0/2", "1/0", "a/b", "1", "1/2/3", "-1/2"])
def test_parse_part_rejects(bad):
    with pytest.raises(VolsegError, match="--part") as err:
        Execution.parse(part=bad)
    assert err.value.path == "--part" and repr(bad) in err.value.message


@pytest.mark.parametrize("bad", [0, -3])
def test_parse_workers_rejects(bad):
    with pytest.raises(VolsegError, match=f"must be >= 1, got {bad}") as err:
        Execution.parse(workers=bad)
    assert err.value.path == "--workers"


@pytest.mark.parametrize("bad", ["slurm", "thread", "tcp:/x"])
def test_bad_scheduler_names_the_option_and_the_choices(bad):
    with pytest.raises(VolsegError) as err:
        Execution.parse(scheduler=bad)
    assert err.value.path == "--scheduler"
    assert repr(bad) in err.value.message and "threads, processes, distributed or tcp://HOST:PORT" in err.value.message


def test_execution_is_public_api():
    import volseg

    assert volseg.Execution is Execution and "Execution" in volseg.__all__


def test_parse_keeps_valid_options():
    assert parse_scheduler("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    assert parse_workers(3) == 3
    ex = Execution.parse(scheduler=" processes ", workers=3, part=(1, 4), overwrite=1, quiet=1)
    assert ex == Execution("processes", 3, (1, 4), True, True)
    assert Execution.of(None) == Execution.parse() and Execution.of(ex) is ex
    assert Execution.of(None).workers == parse_workers(None)


_KILLED_JOB = """
import time
from volseg.parallel import Execution

def slow(i):
    time.sleep(60)
    return i

if __name__ == "__main__":
    with Execution.parse(scheduler="processes", workers=2, quiet=True).executor() as ex:
        ex.map(slow, list(range(4)))
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_a_killed_command_leaves_no_pool_workers(tmp_path, sig):
    """kill (or kill -9) of a ``--scheduler processes`` command: its busy workers end within seconds."""
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    script = tmp_path / "job.py"
    script.write_text(_KILLED_JOB)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        workers = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not workers:
            time.sleep(0.5)
            workers = [c for c in psutil.Process(proc.pid).children()
                       if "spawn_main" in " ".join(c.cmdline())]
        assert workers, "the pool never started"
        time.sleep(1.0)  # the worker inside slow()
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers still running after the command was killed: {alive}"
    finally:
        for c in psutil.Process().children(recursive=True):
            c.kill()
