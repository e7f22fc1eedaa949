"""Run block tasks on a Dask scheduler: threads, processes, a local cluster or an existing one.

The execution options of a command (``--scheduler``, ``--workers``, ``--part``, ``--overwrite``,
``--quiet``) are parsed once into an :class:`Execution`. Every command that walks a volume opens
ONE :class:`Executor` from it (``with execution.executor() as ex:``) and hands it its block
tasks: independent ones (:meth:`Executor.map`, one per output chunk or block), z-layer batches
(:meth:`Executor.layers`) or task graphs (:meth:`Executor.get`, the fused passes of
:mod:`volseg.inference.engine`). ``--part I/N`` selects a disjoint share of those blocks (see
:func:`volseg.geometry.select_part`) before they get here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
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


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def parse_workers(workers: int | None) -> int:
    """``--workers``: a positive count, default all cores available to this process."""
    if workers is None:
        return available_cores()
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

    def executor(self) -> "Executor":
        """The :class:`Executor` of these options; use it as a context manager."""
        return Executor(self)


def exit_with_parent(parent: int, every: float = 0.5) -> None:
    """Pool-worker initializer: end this process once ``parent`` (the command) is gone.

    A command killed by SIGTERM or SIGKILL runs no clean-up, and the workers of a
    ``ProcessPoolExecutor`` would go on computing their current task (minutes of a model
    forward) and then wait for work forever. A daemon thread polls the parent's pid every
    ``every`` seconds and calls ``os._exit`` when this process has been re-parented, so a killed
    run leaves no workers behind and its rerun (which resumes) does not compete with them.
    """
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="volseg-exit-with-parent", daemon=True).start()


def _init_worker(parent: int) -> None:
    """Pool-worker initializer: the allocator of the command (:func:`volseg.allocator.tune`) and
    :func:`exit_with_parent`."""
    from volseg.allocator import tune

    tune()
    exit_with_parent(parent)


class Executor:
    """The one task executor of a command, opened from an :class:`Execution`.

    ``threads`` and ``synchronous`` hold nothing; ``processes`` holds one spawn-started process
    pool for the whole command (so worker processes load a model once for every pass);
    ``distributed`` one ``LocalCluster`` of ``workers`` single-threaded worker processes;
    ``tcp://HOST:PORT`` a client of that existing cluster. The pool, cluster or client is made on
    first use (a command that stops early or has nothing to do starts none) and closed when the
    ``with`` block ends.

    Examples
    --------
    >>> with Execution.parse(scheduler="threads", workers=2, quiet=True).executor() as ex:
    ...     ex.map(abs, [-1, 2, -3])
    [1, 2, 3]
    """

    def __init__(self, execution: Execution):
        self.execution = execution
        self._stack = contextlib.ExitStack()
        self._pool = None
        self._client = None

    @property
    def scheduler(self) -> str:
        return self.execution.scheduler

    @property
    def workers(self) -> int:
        return self.execution.workers

    @property
    def quiet(self) -> bool:
        return self.execution.quiet

    @property
    def local(self) -> bool:
        """True on threads, processes and synchronous (no Dask cluster, no client)."""
        return self.scheduler in ("threads", "processes", "synchronous")

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool, client and cluster this executor opened (idempotent)."""
        self._pool = self._client = None
        self._stack.close()

    @property
    def client(self):
        """The ``distributed.Client`` (opened on first use), or None on the local schedulers."""
        if self.local:
            return None
        if self._client is None:
            self._client = self._open_client()
        return self._client

    def _open_client(self):
        from distributed import Client, LocalCluster

        if self.scheduler == "distributed":
            cluster = self._stack.enter_context(LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                silence_logs=logging.CRITICAL))
            return self._stack.enter_context(Client(cluster))
        try:
            client = Client(self.scheduler, timeout=os.environ.get("VOLSEG_CONNECT_TIMEOUT") or "20s")
        except OSError as exc:
            raise VolsegError("--scheduler", f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None
        return self._stack.enter_context(client)

    def dask_options(self) -> dict[str, Any]:
        """Keyword arguments of ``dask.compute`` for a local scheduler: the scheduler, the worker
        count and, for ``processes``, the command's process pool (opened on first use)."""
        if self.scheduler == "synchronous":
            return {"scheduler": "synchronous"}
        options: dict[str, Any] = {"scheduler": self.scheduler, "num_workers": self.workers}
        if self.scheduler == "processes":
            if self._pool is None:
                import multiprocessing
                from concurrent.futures import ProcessPoolExecutor

                self._pool = self._stack.enter_context(
                    ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(os.getpid(),)))
            options["pool"] = self._pool
        return options

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *, description: str = "blocks",
            quiet: bool | None = None) -> list[Any]:
        """``[fn(item) for item in items]`` as independent tasks, results in order.

        Parameters
        ----------
        fn : callable
            A picklable function of one item (module-level for the process-based schedulers).
        items : sequence
            One entry per independent task (e.g. an output chunk's index).
        description : str
            Progress bar label (the bar shows on a terminal only).
        quiet : bool, optional
            Hide the bar; default the execution's ``quiet``.
        """
        from volseg.progress import progress_bar

        items = list(items)
        if not items:
            return []
        with progress_bar(description, len(items), quiet=self.quiet if quiet is None else quiet) as bar:
            if not self.local:
                from distributed import as_completed

                futures = self.client.map(fn, items, pure=False)
                for _ in as_completed(futures):
                    bar.advance(1)
                return self.client.gather(futures)
            from dask.core import quote

            name = f"volseg-task-{uuid.uuid4().hex[:12]}"
            dsk = {(name, k): (fn, quote(item)) for k, item in enumerate(items)}
            return self.get(dsk, list(dsk), bar=bar)

    def get(self, dsk: dict, keys: Sequence, *, bar=None,
            counts: Callable[[Any], bool] | None = None) -> list[Any]:
        """Compute ``keys`` of the task graph ``dsk`` (a Dask low-level graph), results in order.

        ``bar`` (a :func:`volseg.progress.progress_bar`) advances once per computed key for which
        ``counts(key)`` is true (default: every key asked for); on a cluster it advances when the
        graph is done.
        """
        keys = list(keys)
        if not keys:
            return []
        wanted = set(keys) if counts is None else None
        counted = counts or (lambda key: key in wanted)
        if not self.local:
            results = list(self.client.get(dsk, keys))
            if bar is not None:
                bar.advance(sum(1 for k in keys if counted(k)))
            return results
        import dask.local
        import dask.multiprocessing
        import dask.threaded
        from dask.callbacks import Callback

        class _Advance(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):
                if bar is not None and counted(key):
                    bar.advance(1)

        options = self.dask_options()
        get = {"synchronous": dask.local.get_sync, "threads": dask.threaded.get,
               "processes": dask.multiprocessing.get}[options.pop("scheduler")]
        with _Advance():
            return list(get(dsk, keys, **options))

    def layers(self, fn: Callable[[tuple[int, int, int]], Any], counts: Sequence[int], *, per_batch: int,
               description: str = "blocks") -> Iterator[tuple[int, list[Any]]]:
        """Run ``fn`` on every block index of a (nz, ny, nx) grid, ``per_batch`` z-layers at a time.

        Yields ``(iz, results)`` for every z-layer in order, ``results`` in (iy, ix) order, so that
        a caller can merge component labels across faces layer by layer (memory bounded by the
        blocks of one batch) while the blocks of a batch run in parallel.
        """
        import itertools

        from volseg.progress import progress_bar

        nz, ny, nx = (int(n) for n in counts)
        per_batch = max(1, int(per_batch))
        with progress_bar(description, nz * ny * nx, quiet=self.quiet) as bar:
            for z0 in range(0, nz, per_batch):
                layers = range(z0, min(nz, z0 + per_batch))
                items = [(iz, iy, ix) for iz in layers for iy, ix in itertools.product(range(ny), range(nx))]
                results = self.map(fn, items, quiet=True)
                bar.advance(len(items))
                for k, iz in enumerate(layers):
                    yield iz, results[k * ny * nx:(k + 1) * ny * nx]
