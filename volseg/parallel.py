"""Run block tasks on a Dask scheduler: threads, processes, a local cluster or an existing one.

Every command that walks a volume builds a list of independent block tasks (one per output
chunk or block) and hands them to :func:`run_tasks`. ``--part I/N`` selects a disjoint share of
those blocks (see :func:`volseg.geometry.split_parts`) before they get here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from volseg.errors import VolsegError

LOCAL_SCHEDULERS = ("threads", "processes", "distributed", "synchronous")


def parse_scheduler(name: str) -> str:
    """Validate ``--scheduler``: a local scheduler name or a ``tcp://HOST:PORT`` address."""
    name = (name or "threads").strip()
    if name in LOCAL_SCHEDULERS or name.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return name
    raise VolsegError("--scheduler", f"unknown scheduler {name!r}; use threads, processes, "
                      "distributed or tcp://HOST:PORT")


def parse_workers(workers: int | None) -> int:
    """``--workers``: a positive count, default all cores available to this process."""
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - non-Linux
            return max(1, os.cpu_count() or 1)
    if workers < 1:
        raise VolsegError("--workers", f"must be >= 1, got {workers}")
    return int(workers)


def parse_part(text: str | None) -> tuple[int, int] | None:
    """Parse ``--part I/N`` (1-based I) into ``(i, n)`` with 0 <= i < n; None stays None."""
    if text is None or text == "":
        return None
    try:
        i_text, n_text = str(text).split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise VolsegError("--part", f"expected I/N such as 1/4, got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise VolsegError("--part", f"{text!r} is out of range: I must be between 1 and N (N >= 1)")
    return i - 1, n


@dataclass(frozen=True)
class Execution:
    """How a command runs its block tasks: one object, parsed once at the command boundary.

    Attributes
    ----------
    scheduler : str
        ``threads``, ``processes``, ``synchronous``, ``distributed`` or a cluster address
        (validated by :func:`parse_scheduler`).
    workers : int
        Threads or processes (default: all cores available to this process).
    part : (i, n) or None
        ``--part I/N`` as a 0-based ``(i, n)``; None runs every block.
    overwrite : bool
        Replace an existing output made with other settings.
    quiet : bool
        No progress bars.

    Examples
    --------
    >>> Execution.parse(scheduler="threads", workers=2, part="1/4")
    Execution(scheduler='threads', workers=2, part=(0, 4), overwrite=False, quiet=False)
    """

    scheduler: str = "threads"
    workers: int = 1
    part: tuple[int, int] | None = None
    overwrite: bool = False
    quiet: bool = False

    @classmethod
    def parse(cls, *, scheduler: str = "threads", workers: int | None = None, part=None,
              overwrite: bool = False, quiet: bool = False) -> "Execution":
        """Validate the execution options (text as the CLI passes them, or parsed values)."""
        part = parse_part(part) if isinstance(part, (str, type(None))) else tuple(int(v) for v in part)
        return cls(parse_scheduler(scheduler), parse_workers(workers), part, bool(overwrite), bool(quiet))

    @classmethod
    def of(cls, execution: "Execution | None") -> "Execution":
        """``execution`` itself, or the defaults (threads on every core) for None."""
        return execution if execution is not None else cls.parse()


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    scheduler: str = "threads",
    workers: int | None = None,
    description: str = "blocks",
    quiet: bool = False,
) -> list[Any]:
    """Apply ``fn`` to every item on the chosen Dask scheduler and return results in order.

    Parameters
    ----------
    fn : callable
        A picklable function of one item (module-level for the process-based schedulers).
    items : sequence
        One entry per independent task (e.g. an output chunk's index).
    scheduler : str
        ``threads``, ``processes``, ``synchronous``, ``distributed`` (a ``LocalCluster`` with
        ``workers`` single-threaded worker processes) or the address of an existing cluster.
    workers : int, optional
        Number of threads/processes; default all cores.
    description, quiet
        Progress bar label; ``quiet`` hides it (it shows only on a terminal anyway).
    """
    from volseg.progress import progress_bar

    scheduler = parse_scheduler(scheduler)
    items = list(items)
    if not items:
        return []
    with progress_bar(description, len(items), quiet=quiet) as bar:
        if scheduler in ("threads", "processes", "synchronous"):
            return _run_local(fn, items, scheduler, parse_workers(workers), bar)
        return _run_distributed(fn, items, scheduler, workers, bar)


def run_layers(
    fn: Callable[[tuple[int, int, int]], Any],
    counts: Sequence[int],
    *,
    per_batch: int,
    scheduler: str = "threads",
    workers: int | None = None,
    description: str = "blocks",
    quiet: bool = False,
) -> Iterator[tuple[int, list[Any]]]:
    """Run ``fn`` on every block index of a (nz, ny, nx) grid, ``per_batch`` z-layers at a time.

    Yields ``(iz, results)`` for every z-layer in order, ``results`` in (iy, ix) order, so that
    a caller can merge component labels across faces layer by layer (memory bounded by the
    blocks of one batch) while the blocks of a batch run in parallel.
    """
    import itertools

    from volseg.progress import progress_bar

    nz, ny, nx = (int(n) for n in counts)
    per_batch = max(1, int(per_batch))
    with progress_bar(description, nz * ny * nx, quiet=quiet) as bar:
        for z0 in range(0, nz, per_batch):
            layers = range(z0, min(nz, z0 + per_batch))
            items = [(iz, iy, ix) for iz in layers for iy, ix in itertools.product(range(ny), range(nx))]
            results = run_tasks(fn, items, scheduler=scheduler, workers=workers, quiet=True)
            bar.advance(len(items))
            for k, iz in enumerate(layers):
                yield iz, results[k * ny * nx:(k + 1) * ny * nx]


def _run_local(fn, items, scheduler, workers, bar) -> list[Any]:
    import dask
    from dask.callbacks import Callback

    class _Advance(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            bar.advance(1)

    tasks = [dask.delayed(fn, pure=False)(item, dask_key_name=f"volseg-task-{k}")
             for k, item in enumerate(items)]
    kwargs = {"scheduler": scheduler}
    if scheduler != "synchronous":
        kwargs["num_workers"] = workers
    with _Advance():
        return list(dask.compute(*tasks, **kwargs))


def _run_distributed(fn, items, scheduler, workers, bar) -> list[Any]:
    from distributed import as_completed

    with dask_client(scheduler, workers) as client:
        futures = client.map(fn, items, pure=False)
        for _ in as_completed(futures):
            bar.advance(1)
        return client.gather(futures)


@contextlib.contextmanager
def dask_client(scheduler: str = "threads", workers: int | None = None) -> Iterator[Any]:
    """Yield a ``distributed.Client`` kept for several computations, or None.

    ``distributed``: a ``LocalCluster`` of ``workers`` single-threaded worker processes (closed
    afterwards); ``tcp://HOST:PORT``: a client of that existing cluster; the local schedulers
    (threads, processes, synchronous): None.
    """
    scheduler = parse_scheduler(scheduler)
    if scheduler in ("threads", "processes", "synchronous"):
        yield None
        return
    from distributed import Client, LocalCluster

    cluster = None
    if scheduler == "distributed":
        cluster = LocalCluster(n_workers=parse_workers(workers), threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.CRITICAL)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=os.environ.get("VOLSEG_CONNECT_TIMEOUT") or "20s")
        except OSError as exc:
            raise VolsegError("--scheduler", f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
