"""The allocator tuning of volseg.allocator: applied once, skipped where the user tunes glibc."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from volseg import allocator


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != allocator.ENV}
    full.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full, timeout=120, check=False)


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or not os.confstr("CS_GNU_LIBC_VERSION")
                           .startswith("glibc"), reason="glibc only")


@glibc
def test_tune_keeps_large_freed_blocks_for_reuse_in_worker_threads():
    # A 64 MB block allocated, written and freed in a worker thread: untuned glibc gives it back (mmap/munmap
    # or a trimmed arena) and faults its pages in again every time; tuned, the pages stay.
    code = """
        import ctypes, resource, sys, threading
        from volseg import allocator
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = (ctypes.c_size_t,)
        libc.free.argtypes = (ctypes.c_void_p,)
        tuned = allocator.tune() if sys.argv[1:] == ["tune"] else False
        faults = []
        def work():
            libc.free(libc.malloc(64))
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(20):  # as a tensor of a forward pass: allocated, written, freed
                block = libc.malloc(64 * 1024 * 1024)
                ctypes.memset(block, 1, 64 * 1024 * 1024)
                libc.free(block)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        t = threading.Thread(target=work); t.start(); t.join()
        print(tuned, faults[0], allocator.tune() is allocator.tune())
    """
    plain = _run(code.replace("sys.argv[1:]", "['no']"))
    tuned = _run(code.replace("sys.argv[1:]", "['tune']"))
    assert plain.returncode == 0 and tuned.returncode == 0, plain.stderr + tuned.stderr
    p_tuned, p_faults, p_once = plain.stdout.split()
    t_tuned, t_faults, t_once = tuned.stdout.split()
    assert (p_tuned, t_tuned, p_once, t_once) == ("False", "True", "True", "True")
    pages = 64 * 1024 * 1024 // 4096
    assert int(p_faults) > 10 * pages  # every round faults the block in again
    assert int(t_faults) < 2 * pages  # once


@pytest.mark.parametrize("env", [{allocator.ENV: "system"}, {"MALLOC_ARENA_MAX": "4"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}])
def test_the_user_s_own_setting_wins(env):
    r = _run("from volseg import allocator; print(allocator.tune())", **env)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


@glibc
def test_the_command_line_tunes_at_start_up_and_pool_workers_too():
    code = """
        import volseg.cli, volseg.allocator as a, sys
        sys.argv = ["volseg", "--help"]
        try:
            volseg.cli.main()
        except SystemExit:
            pass
        print("TUNED", a._DONE)
        from volseg.parallel import Execution
        def probe(_):
            import volseg.allocator as b
            return b._DONE
        with Execution.parse(scheduler="processes", workers=1, quiet=True).executor() as ex:
            print("WORKER", ex.map(probe, [0]))
    """
    r = _run(code)
    assert r.returncode == 0, r.stderr
    assert "TUNED [True]" in r.stdout and "WORKER [[True]]" in r.stdout
