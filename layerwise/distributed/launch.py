"""``layerwise train --nproc N``: the same command again under the environment's mpiexec, its
output passed through, and a failed job reported in one line that names the failed rank.

MPICH's mpiexec (Hydra) ends the job as soon as one rank exits with an error or is killed,
and says so in a dozen lines naming a process id; asked to (``-print-all-exitcodes``), it
also prints every rank's exit status, from which the failed rank is named here. A rank that
raised has printed its own one-line ``error: rank R of N: ...`` (layerwise.cli.main) before
ending the job; that line is the one shown.
"""

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading

from layerwise.distributed.comm import INSTALL_HINT, DistributedError

# Lines Hydra and MPICH print around a failed job, which the one-line summary replaces.
_NOISE = re.compile(r"^(=+\s*$|=   |\[mpiexec@|\[proxy:|YOUR APPLICATION TERMINATED|This typically "
                    r"refers to a problem|Please see the FAQ page|Abort\(\d+\) on node|"
                    r"application called MPI_Abort)")
_EXIT_CODES = re.compile(r"Exit codes:\s*(.*)$")
_HOST_CODES = re.compile(r"\[([^\]]+)\]\s*([\d,]+)")
_RANK_ERROR = "error: rank "
# A rank's own error line ends the job with the exit status the CLI gives it; other
# statuses (a signal, os._exit) are reported as a failure, exit status 1.
_CLI_STATUSES = (1, 2, 3, 130)
_VERSION_TIMEOUT = 10  # seconds for `mpiexec --version` (it answers in milliseconds)


def find_mpiexec():
    """The mpiexec of this Python's environment (the `mpich` wheel puts it beside python),
    else the first on PATH; a DistributedError saying how to install it when there is none."""
    if importlib.util.find_spec("mpi4py") is None:
        raise DistributedError(f"--nproc runs training on several processes with MPI, which "
                               f"is not installed: {INSTALL_HINT}")
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("mpiexec")
    if found is None:
        raise DistributedError(f"--nproc needs mpiexec, which is not installed: {INSTALL_HINT}")
    return found


def _is_hydra(mpiexec):
    """Whether ``mpiexec`` is MPICH's Hydra, which takes -print-all-exitcodes."""
    try:
        about = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                               timeout=_VERSION_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "HYDRA" in about.stdout


def run_under_mpiexec(nproc, command):
    """Run ``command`` (a list: program and arguments) as ``nproc`` MPI processes; returns
    the exit status for the CLI: 0, or 1/2/3/130 after one `error:` line on stderr."""
    mpiexec = find_mpiexec()
    flags = ["-print-all-exitcodes"] if _is_hydra(mpiexec) else []
    job = subprocess.Popen([mpiexec, *flags, "-n", str(nproc), *command],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    summary = _Summary(nproc)
    # Hydra prints its banner and the exit statuses on stdout, the ranks' errors come on
    # stderr: both are read, each passed on to where it was going.
    readers = [threading.Thread(target=summary.pass_on, args=(pipe, out), daemon=True)
               for pipe, out in ((job.stdout, sys.stdout), (job.stderr, sys.stderr))]
    for reader in readers:
        reader.start()
    try:
        status = job.wait()
        for reader in readers:
            reader.join()
    except KeyboardInterrupt:  # mpiexec passes the interrupt on to every rank
        job.send_signal(signal.SIGINT)
        job.wait()
        raise
    if status == 0:
        return 0
    if summary.rank_error is None:
        print(f"error: {summary.failure(status)}; the other ranks were stopped and the last "
              f"checkpoint is kept (continue with `layerwise train --resume RUN --nproc "
              f"{nproc}`)", file=sys.stderr)
    return status if status in _CLI_STATUSES else 1


class _Summary:
    """Reads the job's stderr: passes its lines on, keeps the first rank error, drops the
    launcher's banner and the later ranks' errors, and parses the ranks' exit statuses."""

    def __init__(self, nproc):
        self.nproc = nproc
        self.rank_error = None
        self.statuses = None  # [(host, wait status)] in rank order
        self._lock = threading.Lock()

    def pass_on(self, pipe, out):
        for raw in pipe:
            with self._lock:
                line = self.read(raw.decode("utf-8", "replace"))
                if line is not None:
                    out.write(line)
                    out.flush()

    def read(self, line):
        """The line to show, or None."""
        codes = _EXIT_CODES.search(line)
        if codes and line.startswith("[mpiexec@"):
            self.statuses = [(host, int(code)) for host, codes in
                             _HOST_CODES.findall(codes.group(1)) for code in codes.split(",")]
            return None
        if _NOISE.match(line):
            return None
        if line.startswith(_RANK_ERROR):
            if self.rank_error is not None:
                return None  # the first failure is the cause; the rest follow from it
            self.rank_error = line
        return line

    def failure(self, status):
        """What failed, in words: the first rank whose exit status was not 0."""
        for rank, (host, code) in enumerate(self.statuses or ()):
            if code:
                return f"rank {rank} of {self.nproc} (on {host}) {_described(code)}"
        return f"the job of {self.nproc} processes failed (mpiexec exit status {status})"


def _described(wait_status):
    """A process's wait status in words: 'exited with code 3', 'was killed by SIGKILL'."""
    signal_number = wait_status & 0x7F
    if signal_number:
        try:
            name = signal.Signals(signal_number).name
        except ValueError:
            name = f"signal {signal_number}"
        return f"was killed by {name}"
    return f"exited with code {wait_status >> 8}"
