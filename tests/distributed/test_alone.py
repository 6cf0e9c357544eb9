"""lw.distributed, DistributedDataParallel and the --nproc launcher without an MPI job: the
single-process fallback, the one-line errors, and how a failed job's output is summarised."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import layerwise as lw
from layerwise import distributed, nn
from layerwise.cli.main import main
from layerwise.distributed import comm
from layerwise.distributed.launch import _Summary
from layerwise.errors import RunError
from layerwise.nn import functional as F
from layerwise.nn.parallel import DistributedDataParallel
from layerwise.train import data_parallel
from layerwise.train.trainer import Trainer


def test_importing_layerwise_leaves_mpi_alone():
    # mpi4py's import initialises MPI: importing layerwise, or running alone, must not
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI", "OMPI", "PMIX"))}
    code = ("import sys, layerwise as lw; lw.distributed.init(); "
            "print('mpi4py' in sys.modules, lw.distributed.rank(), lw.distributed.world_size())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert out.stdout.split() == ["False", "0", "1"], out.stderr


def test_alone_every_collective_leaves_its_input():
    distributed.init()
    grad = np.array([1.0, 2.0])
    distributed.all_reduce(grad)
    distributed.broadcast(grad)
    distributed.all_reduce(grad, async_op=True).wait()
    distributed.barrier()
    assert grad.tolist() == [1.0, 2.0]
    assert distributed.all_gather_json({"a": 1}) == [{"a": 1}]
    assert distributed.broadcast_json([1, "x"]) == [1, "x"]
    assert (distributed.rank(), distributed.world_size(), distributed.rank_label()) == (0, 1, "")
    with pytest.raises(ValueError, match="op must be one of sum, max, min, got 'mean'"):
        distributed.all_reduce(grad, op="mean")
    with pytest.raises(ValueError, match="needs a writeable, contiguous array or Tensor"):
        distributed.all_reduce(np.arange(4.0)[::2])


def test_alone_ddp_is_the_module_itself():
    lw.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ddp = DistributedDataParallel(model)
    x, y = lw.randn(5, 3), lw.tensor([0, 1, 1, 0, 1])
    F.cross_entropy(ddp(x), y).backward()
    wrapped = [p.grad.data.copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad = None
    F.cross_entropy(model(x), y).backward()
    assert all((a == p.grad.data).all() for a, p in zip(wrapped, model.parameters()))
    assert ddp.module is model
    assert list(ddp.state_dict()) == [f"module.{k}" for k in model.state_dict()]  # PyTorch's
    with ddp.no_sync():
        F.cross_entropy(ddp(x), y).backward()
    model.config = {"classes": 2}
    assert ddp.config is model.config  # what the wrapper lacks, it reads from the module


@pytest.mark.parametrize("cap, error, message", [
    (0, ValueError, "bucket_cap_mb must be a positive number of MiB, got 0"),
    (True, ValueError, "bucket_cap_mb must be a positive number of MiB, got True"),
    ("25", ValueError, "bucket_cap_mb must be a positive number of MiB, got '25'"),
])
def test_bad_bucket_sizes_are_refused(cap, error, message):
    with pytest.raises(error, match=message):
        DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=cap)


def test_ddp_wraps_only_modules():
    with pytest.raises(TypeError, match="wraps an nn.Module, got function"):
        DistributedDataParallel(lambda x: x)


def test_under_mpiexec_without_mpi4py_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(comm, "_job", None)
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` raises ImportError
    with pytest.raises(distributed.DistributedError, match=r"uv sync --extra mpi.*pip install "
                       r"layerwise\[mpi\]"):
        distributed.init()


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_bad_timeout_variable_is_refused_in_one_line(monkeypatch, value):
    monkeypatch.setattr(comm, "_timeout", None)
    monkeypatch.setenv("LAYERWISE_DIST_TIMEOUT", value)
    with pytest.raises(distributed.DistributedError, match=f"LAYERWISE_DIST_TIMEOUT='{value}'"):
        distributed.timeout()
    with pytest.raises(ValueError, match="timeout must be a positive number of seconds"):
        distributed.set_timeout(0)


def test_a_collective_that_never_completes_times_out(monkeypatch):
    class Never:
        @staticmethod
        def Testall(requests):
            return False

    monkeypatch.setattr(comm, "_job", comm._Job())
    monkeypatch.setattr(comm._job, "mpi", type("MPI", (), {"Request": Never}), raising=False)
    monkeypatch.setattr(comm, "_timeout", 0.05)
    with pytest.raises(distributed.DistributedTimeout,
                       match=r"did not answer within 0.05 s \(barrier\)"):
        comm.Work(["request"], "barrier").wait()


def test_nproc_without_mpi_says_how_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mpi4py" else real(name, *a))
    assert main(["train", "--model", "tiny", "--nproc", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --nproc runs training on several")
    assert "uv sync --extra mpi" in err and "pip install layerwise[mpi]" in err


def test_nproc_must_match_the_job_mpiexec_started(monkeypatch, capsys):
    monkeypatch.setattr(distributed, "launched", lambda: True)
    monkeypatch.setattr(distributed, "init", lambda timeout=None: 2)
    assert main(["train", "--model", "tiny", "--nproc", "3"]) == 2
    err = capsys.readouterr().err
    assert "--nproc 3 asks for 3 processes but mpiexec started 2" in err and err.count("\n") == 1


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_nproc_is_a_usage_error(capsys, value):
    with pytest.raises(SystemExit) as stop:
        main(["train", "--nproc", value])
    assert stop.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_a_batch_that_does_not_split_over_the_ranks_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    data = lw.data.TensorDataset(lw.randn(10, 2))
    with pytest.raises(RunError, match="batch_size 63 does not split evenly over 2 processes; "
                                       "use a multiple of 2"):
        data_parallel.train_loader(data, 63, seed=1)
    loader = data_parallel.train_loader(data, 64, seed=1)
    assert loader.batch_size == 32 and loader.sampler.num_replicas == 2


def test_a_checkpoint_of_another_number_of_ranks_is_refused():
    model = nn.Linear(2, 2)
    trainer = Trainer(model, lw.optim.SGD(model.parameters(), lr=0.1),
                      train_loader=lw.data.DataLoader(lw.data.TensorDataset(lw.randn(4, 2))))
    state = dict(trainer.state_dict(), world_size=2)
    with pytest.raises(ValueError, match=r"written by a run on 2 process\(es\) and this one has "
                                         r"1; resume it on 2 \(--nproc 2"):
        trainer.load_state_dict(state)


# --- what --nproc shows of a failed job -----------------------------------------------------

HYDRA_KILLED = """\
rank 0 output
===================================================================================
=   BAD TERMINATION OF ONE OF YOUR APPLICATION PROCESSES
=   PID 7806 RUNNING AT vm
=   EXIT CODE: 9
=   CLEANING UP REMAINING PROCESSES
=   YOU CAN IGNORE THE BELOW CLEANUP MESSAGES
===================================================================================
[mpiexec@vm] Exit codes: [vm] 0,9
YOUR APPLICATION TERMINATED WITH THE EXIT STRING: Killed (signal 9)
This typically refers to a problem with your application.
Please see the FAQ page for debugging suggestions
"""


def test_the_launchers_banner_gives_way_to_the_failed_rank():
    summary = _Summary(2)
    shown = [line for line in HYDRA_KILLED.splitlines(keepends=True)
             if summary.read(line) is not None]
    assert shown == ["rank 0 output\n"]
    assert summary.failure(9) == "rank 1 of 2 (on vm) was killed by SIGKILL"
    exited = _Summary(3)
    exited.read("[mpiexec@node1] Exit codes: [node1] 0,0 [node2] 1792\n")
    assert exited.failure(7) == "rank 2 of 3 (on node2) exited with code 7"
    assert _Summary(2).failure(5) == "the job of 2 processes failed (mpiexec exit status 5)"


def test_only_the_first_rank_error_is_shown():
    summary = _Summary(2)
    first = "error: rank 1 of 2: batch_size 63 does not split evenly\n"
    assert summary.read(first) == first
    assert summary.read("error: rank 0 of 2: batch_size 63 does not split evenly\n") is None
    assert summary.read("Abort(1) on node 1 (rank 1 in comm 0): application called MPI_Abort"
                        "(MPI_COMM_WORLD, 1) - process 1\n") is None
    assert summary.rank_error == first
