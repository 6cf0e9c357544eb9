"""A job whose rank fails or hangs ends with one line naming the rank (through the launcher
that `layerwise train --nproc` uses), not with a hang."""

import sys
import textwrap
import time

from layerwise.distributed.launch import run_under_mpiexec
from tests.distributed.jobs import mpiexec_or_skip

# Rank 1 asks for a recipe that does not exist while rank 0 lists the recipes: the CLI's
# error on rank 1 must end the job (rank 0 would otherwise finish as if all were well).
ONE_RANK_FAILS = textwrap.dedent('''
    import os, sys
    from layerwise.cli.main import main
    rank = int(os.environ["PMI_RANK"])
    sys.exit(main(["train", "--list"] if rank == 0 else ["train", "--model", "no-such-model"]))
''')

# Rank 1 never reaches the barrier: rank 0 gives up after LAYERWISE_DIST_TIMEOUT.
ONE_RANK_HANGS = textwrap.dedent('''
    import sys, time
    from layerwise import distributed
    from layerwise.cli.main import main
    distributed.init()
    if distributed.rank() == 1:
        time.sleep(60)
    try:
        distributed.barrier()
    except distributed.DistributedTimeout as err:
        print(f"error: {distributed.rank_label()}{err}", file=sys.stderr, flush=True)
        distributed.abort(1)
''')


def _errors(text):
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_a_rank_that_raises_ends_the_job_with_its_one_line(tmp_path, capfd):
    mpiexec_or_skip()
    script = tmp_path / "fails.py"
    script.write_text(ONE_RANK_FAILS)
    assert run_under_mpiexec(2, [sys.executable, str(script)]) == 2
    errors = _errors(capfd.readouterr().err)
    assert len(errors) == 1 and errors[0].startswith(
        "error: rank 1 of 2: unknown model 'no-such-model'"), errors


def test_a_rank_that_hangs_stops_the_others_within_the_timeout(tmp_path, capfd, monkeypatch):
    mpiexec_or_skip()
    monkeypatch.setenv("LAYERWISE_DIST_TIMEOUT", "1")
    script = tmp_path / "hangs.py"
    script.write_text(ONE_RANK_HANGS)
    start = time.monotonic()
    assert run_under_mpiexec(2, [sys.executable, str(script)]) == 1
    assert time.monotonic() - start < 30  # the timeout (1 s) and the launch, not rank 1's 60 s
    errors = _errors(capfd.readouterr().err)
    assert errors == [("error: rank 0 of 2: the other ranks did not answer within 1 s (barrier): "
                       "one has stopped or hangs (the limit is LAYERWISE_DIST_TIMEOUT or "
                       "lw.distributed.init(timeout=))")]
