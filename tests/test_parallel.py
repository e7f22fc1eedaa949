"""The block-task runner on real Dask schedulers, and --part/--scheduler parsing."""

import pickle

import pytest

from volseg.errors import VolsegError
from volseg.parallel import parse_part, parse_scheduler, parse_workers, run_layers, run_tasks


def square(x):
    return x * x


def refuse(x):
    raise VolsegError(f"block-{x}", "bad block")


@pytest.mark.parametrize("scheduler", ["synchronous", "threads", "processes"])
def test_run_tasks_local_schedulers_keep_order(scheduler):
    assert run_tasks(square, range(7), scheduler=scheduler, workers=2) == [k * k for k in range(7)]


def test_run_tasks_distributed_local_cluster():
    assert run_tasks(square, [3, 1, 2], scheduler="distributed", workers=1) == [9, 1, 4]


def test_run_tasks_existing_cluster_address():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert run_tasks(square, [4, 5], scheduler=cluster.scheduler_address) == [16, 25]


def test_run_tasks_empty():
    assert run_tasks(square, [], scheduler="threads") == []


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_volseg_error_crosses_workers(scheduler):
    with pytest.raises(VolsegError, match="block-1: bad block"):
        run_tasks(refuse, [1], scheduler=scheduler, workers=1)


def test_volseg_error_pickles():
    err = pickle.loads(pickle.dumps(VolsegError("a.tif", "broken")))
    assert (err.path, err.message, str(err)) == ("a.tif", "broken", "a.tif: broken")


@pytest.mark.parametrize("text,expected", [(None, None), ("1/1", (0, 1)), ("2/3", (1, 3)), ("3/3", (2, 3))])
def test_parse_part(text, expected):
    assert parse_part(text) == expected


@pytest.mark.parametrize("bad", ["3/2", "0/2", "1/0", "a/b", "1", "1/2/3", "-1/2"])
def test_parse_part_rejects(bad):
    with pytest.raises(VolsegError, match="--part"):
        parse_part(bad)


def test_parse_scheduler():
    assert parse_scheduler("tcp://127.0.0.1:8786") == "tcp://127.0.0.1:8786"
    with pytest.raises(VolsegError, match="--scheduler"):
        parse_scheduler("slurm")
    assert parse_workers(3) == 3
    with pytest.raises(VolsegError, match="--workers"):
        parse_workers(0)


def _index(item):
    return item


@pytest.mark.parametrize("per_batch", [1, 2, 5])
@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_run_layers_yields_every_layer_in_order(scheduler, per_batch):
    layers = list(run_layers(_index, (3, 2, 2), per_batch=per_batch, scheduler=scheduler, workers=2, quiet=True))
    assert [iz for iz, _ in layers] == [0, 1, 2]
    for iz, results in layers:
        assert results == [(iz, 0, 0), (iz, 0, 1), (iz, 1, 0), (iz, 1, 1)]
