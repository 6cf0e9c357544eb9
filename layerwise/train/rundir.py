"""A run directory is a small database: one writer at a time, no path out of it, no write
through a link, nothing half-written left behind.

- One writer: ``RunLock`` holds an exclusive ``flock`` on ``run.lock`` (with the holder's pid
  in it) for the whole life of a training process. The kernel drops the lock when its holder
  exits, killed or not, so a lock can never go stale.
- No path out: a file name read from one of the run's own files goes through ``run_path``,
  which resolves it (symbolic links followed) and refuses anything outside the directory.
- No write through a link: files are either replaced atomically (``write_atomic`` writes a
  temporary file in the run directory and ``os.replace``s it, which replaces a link rather
  than following it; ``read_own_text`` reads the old content of such a file without following
  one) or appended by ``append_text``, which refuses a link.
- Nothing half-written: ``remove_stale_temps`` deletes the temporary files of atomic writes
  that a killed writer left; it runs under the lock, so no live writer owns them.
"""

import errno
import json
import os
import re
import stat

from layerwise.errors import LayerwiseError, RunError

try:
    import fcntl
except ImportError:  # Windows: a byte-range lock instead
    fcntl = None
    import msvcrt

LOCK_FILE = "run.lock"
CONFIG_FILE = "config.json"
# What a run writes into its directory (see layerwise.train.checkpoint); the model card's
# files are written into it later by ``layerwise report``.
RUN_FILES = frozenset({
    CONFIG_FILE, "history.jsonl", "best.safetensors", "last.safetensors", "last.json",
    "last.next.safetensors", "model.safetensors", "metrics.json", "tokenizer.json",
    "trained.json", "sample.txt", "emissions.csv", "card.json", "card.html", LOCK_FILE,
})
# The temporary file of an atomic write of NAME: ``tempfile.mkstemp(prefix=".NAME.",
# suffix=".tmp")``, whose random part is 8 characters of [a-z0-9_].
_ATOMIC_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO planted in the run must not block us
_PID_BYTES = 32
_WINDOWS_LOCK_OFFSET = 1024  # past the pid, which a second writer must still be able to read


def is_run_dir(path):
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


# --- one writer at a time -------------------------------------------------------------------


class RunLock:
    """Exclusive use of a run directory by this process, for as long as the lock is held.

        with RunLock(run_dir):
            ...  # read and rewrite the run's files

    A second holder, in this process or another, gets a one-line RunError naming the pid in
    ``run.lock``. The file itself stays (removing it would let a third process lock a new
    file while a second still waits on the old one); only its pid is cleared on release.
    """

    def __init__(self, run_dir):
        self.run_dir = os.fspath(run_dir)
        self.path = os.path.join(self.run_dir, LOCK_FILE)
        self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        fd = _open_own_file(self.path, os.O_RDWR | os.O_CREAT)
        try:
            _lock(fd)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
                os.close(fd)
                raise
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, _PID_BYTES).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise RunError(f"run {self.run_dir} is in use by {who} ({LOCK_FILE}); wait for it "
                           "to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd

    def release(self):
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the only descriptor releases the lock


def _lock(fd):
    """Lock ``fd`` exclusively without waiting; OSError (EAGAIN/EACCES) when it is held."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)


# --- no path out of the run, no write through a link --------------------------------------


def run_path(run_dir, value, source):
    """The real path of the file ``value`` that the run's file ``source`` names.

    It must resolve, symbolic links followed, to a file inside ``run_dir``; anything else
    (``../x``, an absolute path, a link that leads out) is a one-line RunError.
    """
    if not isinstance(value, str) or not value or "\0" in value:
        raise RunError(f"{source} names the file {value!r}; expected the name of a file in "
                       f"the run directory {run_dir}")
    root = os.path.realpath(run_dir)
    path = os.path.realpath(os.path.join(root, value))
    if path == root or os.path.commonpath([root, path]) != root:
        raise RunError(f"{source} names the file {value!r}, which resolves to {path}, outside "
                       f"the run directory {run_dir}; a run reads and writes only its own files")
    return path


def append_text(path, text):
    """Append ``text`` to the regular file ``path``, created if missing. A symbolic link, a
    second hard link or anything but a regular file at ``path`` is a RunError: appending
    would write into a file outside the run."""
    fd = _open_own_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8", newline="") as f:
        f.write(text)


def read_own_text(path):
    """The text of the run's file ``path`` ("" when missing), read without following a link,
    for a writer that rewrites it atomically (which also breaks a hard link, keeping the
    other name's content as it was)."""
    try:
        fd = _open_own_file(path, os.O_RDONLY, one_name=False)
    except FileNotFoundError:
        return ""
    with os.fdopen(fd, encoding="utf-8", newline="") as f:
        try:
            return f.read()
        except UnicodeDecodeError:
            raise RunError(f"{path} is not UTF-8 text; move it away so the run can write "
                           "it anew") from None


def _open_own_file(path, flags, one_name=True):
    """os.open without following a link at ``path``: only a regular file, and with
    ``one_name`` only one that no other name (a hard link) also reaches."""
    _refuse_foreign(path, one_name=one_name)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _NONBLOCK, 0o666)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO):  # planted since the check above
            _refuse_foreign(path, one_name=one_name)
        raise
    try:
        _refuse_foreign(path, os.fstat(fd), one_name)
    except RunError:
        os.close(fd)
        raise
    return fd


def _refuse_foreign(path, info=None, one_name=True):
    """A RunError if ``path`` is a link or not a regular file, or (``one_name``) is also
    reached by another name."""
    if info is None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
    if stat.S_ISLNK(info.st_mode):
        raise RunError(f"{path} is a symbolic link (to {os.readlink(path)!r}); a run writes "
                       "only its own files, never through a link: remove it")
    if not stat.S_ISREG(info.st_mode):
        raise RunError(f"{path} is not a regular file; a run writes only its own files: "
                       "remove it")
    if one_name and info.st_nlink > 1:
        raise RunError(f"{path} has {info.st_nlink} hard links, so it is also a file outside "
                       "the run; a run appends only to its own files: remove it")


def refuse_links(run_dir, names):
    """A RunError if any of ``names`` in ``run_dir`` is a link or not a regular file: checked
    before a run resumes, so that a file written at the end of training cannot fail only
    then."""
    for name in names:
        _refuse_foreign(os.path.join(run_dir, name), one_name=False)


def check_output_file(path, option, extension=".json"):
    """Refuse to write a command's output file over a run's own file, or over an existing
    file that is not an ``extension`` file (a model, a config). A LayerwiseError in one line."""
    path = os.fspath(path)
    real = os.path.realpath(path)
    if os.path.isdir(real):
        raise LayerwiseError(f"{option} {path} is a directory; give a file name ending in "
                             f"{extension}")
    folder, name = os.path.split(real)
    if name in RUN_FILES and is_run_dir(folder):
        raise LayerwiseError(f"{option} {path} is the run's own {name}; writing there would "
                             f"destroy it: give a new file name ending in {extension}")
    if os.path.exists(real) and not (os.path.isfile(real) and _is_json_file(real)):
        raise LayerwiseError(f"{option} {path} exists and is not a JSON file; refusing to "
                             f"overwrite it: give a new file name ending in {extension}")


def _is_json_file(path):
    try:
        with open(path, "rb") as f:
            if f.read(64).lstrip()[:1] not in (b"{", b"["):  # a report is an object or list
                return False
            f.seek(0)
            json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return False
    return True


# --- what a killed writer leaves --------------------------------------------------------------


def remove_stale_temps(run_dir):
    """Delete the temporary files of atomic writes that never finished; returns their names.

    Only names of the form a layerwise atomic write uses (``.NAME.xxxxxxxx.tmp``) are
    touched, so a user's own ``notes.tmp`` stays. Call it under the run's lock.
    """
    removed = []
    for entry in os.scandir(run_dir):
        if _ATOMIC_TEMP.match(entry.name) and not entry.is_dir(follow_symlinks=False):
            os.remove(entry.path)
            removed.append(entry.name)
    return sorted(removed)
