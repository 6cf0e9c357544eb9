"""Two independent halves of a computation on two cores at once, with OpenBLAS's threads
parked while they run.

Why parked: between matrix products OpenBLAS keeps a worker thread per extra core spinning
for up to ~0.1 s, waiting for the next product. A half that layerwise runs on a helper thread
would share a core with that spinning worker and gain nothing. Shutting the workers down for
the duration (``blas_thread_shutdown_``; the next product starts them again) costs ~0.13 ms,
so only work well above that is split (the fast paths that split name their thresholds).

``run_pair(first, second)`` is the one entry point. It runs serially (first, then second)
whenever the two-core form is not available: NumPy's BLAS is not a pthreads OpenBLAS whose
thread functions can be found, the BLAS is limited to one thread (as ``threadpoolctl`` or
``OPENBLAS_NUM_THREADS=1`` do: layerwise never uses more threads than the BLAS may), or
another thread is inside ``run_pair`` already. The halves must not share outputs, and
callers keep any random draws out of them so that results do not depend on which ran first.
"""

import ctypes
import os
import threading

_blas = None  # (set_num_threads, get_num_threads, shutdown) once looked up; False if missing
_helper = None
_lock = threading.Lock()  # held while the helper runs a half


def _symbol(lib, name):
    """An OpenBLAS function under any of the names its builds export (NumPy's wheels bundle
    'scipy_openblas64_', which prefixes and suffixes them)."""
    for candidate in (name, name + "64_", "scipy_" + name, "scipy_" + name + "64_"):
        try:
            return getattr(lib, candidate)
        except AttributeError:
            continue
    return None


def _find_blas():
    """NumPy's OpenBLAS thread controls, or False when NumPy uses another BLAS (or an
    OpenMP OpenBLAS, whose threads this cannot park) or threadpoolctl is missing."""
    try:
        import numpy  # noqa: F401  (loads the BLAS, so that threadpoolctl can see it)
        import threadpoolctl
    except ImportError:
        return False
    found = [info for info in threadpoolctl.threadpool_info()
             if info.get("internal_api") == "openblas" and info.get("threading_layer") == "pthreads"]
    # NumPy's own copy when SciPy's is loaded beside it
    ours = [info for info in found if "numpy" in info["filepath"]] or found
    if len(ours) != 1:
        return False
    try:
        lib = ctypes.CDLL(ours[0]["filepath"])  # already loaded: the same library
    except OSError:
        return False
    functions = (_symbol(lib, "openblas_set_num_threads"),
                 _symbol(lib, "openblas_get_num_threads"),
                 getattr(lib, "blas_thread_shutdown_", None))
    if any(f is None for f in functions):
        return False
    set_threads, get_threads, shutdown = functions
    set_threads.argtypes, set_threads.restype = (ctypes.c_int,), None
    get_threads.argtypes, get_threads.restype = (), ctypes.c_int
    shutdown.argtypes, shutdown.restype = (), ctypes.c_int
    return functions


def blas_threads():
    """How many threads NumPy's BLAS may use now, or None where that cannot be read."""
    global _blas
    if _blas is None:
        _blas = _find_blas()
    return _blas[1]() if _blas else None


def limit_blas_threads(count):
    """Let NumPy's BLAS use at most ``count`` threads from now on (where threadpoolctl can
    reach it): each process of a data-parallel job gets its share of the machine's cores."""
    try:
        import threadpoolctl
    except ImportError:
        return
    threadpoolctl.threadpool_limits(limits=count, user_api="blas")


def available():
    """Whether run_pair would use two cores right now."""
    threads = blas_threads()
    return threads is not None and threads >= 2


class _Helper:
    """A daemon thread that runs one function at a time: ``start`` hands it one, ``wait``
    returns its result or re-raises what it raised."""

    def __init__(self):
        self._go, self._done = threading.Semaphore(0), threading.Semaphore(0)
        self._work = self._result = self._error = None
        threading.Thread(target=self._loop, name="layerwise-half", daemon=True).start()

    def _loop(self):
        while True:
            self._go.acquire()
            try:
                self._result = self._work()
            except BaseException as error:  # handed to the caller by wait()
                self._error = error
            self._work = None
            self._done.release()

    def start(self, work):
        self._work = work
        self._go.release()

    def wait(self):
        self._done.acquire()
        result, error, self._result, self._error = self._result, self._error, None, None
        if error is not None:
            raise error
        return result


def _forget_helper():
    """A forked child has no helper thread (only the forking thread survives a fork)."""
    global _helper, _lock
    _helper, _lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_helper)


def run_pair(first, second):
    """(first(), second()): on two cores when available (the caller's thread runs first, a
    helper thread second, the BLAS single-threaded in both), else one after the other."""
    global _helper
    threads = blas_threads()
    if threads is None or threads < 2 or not _lock.acquire(blocking=False):
        return first(), second()
    set_threads, _, shutdown = _blas
    try:
        if _helper is None:
            _helper = _Helper()
        set_threads(1)
        shutdown()  # park the spinning workers; the next multi-threaded product restarts them
        _helper.start(second)
        try:
            result = first()
        except BaseException:
            try:
                _helper.wait()  # the helper must be idle again before the lock is let go
            except BaseException:
                pass  # first's error is the one to report
            raise
        return result, _helper.wait()
    finally:
        set_threads(threads)
        _lock.release()
