"""``layerwise serve``: its settings and runs checked before any model loads, one line for
each mistake, a server that answers and stops, and the core without the serve extra."""

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from layerwise.cli.main import main
from tests.serve.client import TIMEOUT_S, post, wait_ready

IMAGE = [[[0.0] * 28] * 28]


def run_main(argv, capsys):
    """(exit code, stderr) of ``layerwise ARGV`` run in-process."""
    try:
        rc = main(argv)
    except SystemExit as stop:  # argparse refuses an option this way
        rc = stop.code
    return rc, capsys.readouterr().err


def one_line_error(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fails the test if any model starts loading."""
    from layerwise.serve import deployments

    def refuse(*args, **kwargs):
        raise AssertionError("a model loaded before every setting was checked")

    monkeypatch.setattr(deployments, "load_model", refuse)


@pytest.mark.parametrize("option, value, reason", [
    ("--port", "70000", "argument --port"),
    ("--host", "my-laptop", "expected an IP address such as 127.0.0.1"),
    ("--max-batch", "0", "argument --max-batch"),
    ("--max-wait-ms", "-1", "argument --max-wait-ms"),
    ("--queue", "0", "argument --queue"),
    ("--max-body-mb", "0", "argument --max-body-mb"),
    ("--max-new-tokens", "0", "argument --max-new-tokens"),
])
def test_a_bad_setting_is_refused_in_one_line(runs, capsys, no_model_loads, option, value,
                                              reason):
    rc, err = run_main(["serve", runs["image"], option, value], capsys)
    assert rc == 2 and reason in one_line_error(err)


def test_two_runs_of_one_name_are_refused(runs, tmp_path, capsys, no_model_loads):
    other = tmp_path / os.path.basename(runs["image"])
    shutil.copytree(runs["image"], other)
    rc, err = run_main(["serve", runs["image"], str(other)], capsys)
    assert rc == 2 and "two runs are named 'digits'" in one_line_error(err)


def test_a_run_that_has_not_finished_is_refused_before_any_model_loads(runs, tmp_path, capsys,
                                                                       no_model_loads):
    unfinished = tmp_path / "half-done"
    unfinished.mkdir()
    shutil.copy(os.path.join(runs["table"], "config.json"), unfinished)
    rc, err = run_main(["serve", runs["image"], str(unfinished)], capsys)
    assert rc == 1 and "has not finished" in one_line_error(err)
    rc, err = run_main(["serve", str(tmp_path / "nowhere")], capsys)
    assert rc == 1 and "no run directory" in one_line_error(err)


def test_a_port_in_use_is_refused_before_any_model_loads(runs, capsys, no_model_loads):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        rc, err = run_main(["serve", runs["image"], "--port", str(taken.getsockname()[1])],
                           capsys)
    finally:
        taken.close()
    assert rc == 1 and "in use" in one_line_error(err)


def _serve_in_thread(monkeypatch, argv):
    """Start ``layerwise serve ARGV`` in a thread; (its uvicorn server, its port, the
    thread, where its exit code will be)."""
    from layerwise.serve import server as server_module

    made, bound, result = [], [], []
    real_make, real_bind = server_module.make_server, server_module.bind
    monkeypatch.setattr(server_module, "make_server",
                        lambda *a, **k: made.append(real_make(*a, **k)) or made[-1])
    monkeypatch.setattr(server_module, "bind",
                        lambda *a: bound.append(real_bind(*a)) or bound[-1])
    thread = threading.Thread(target=lambda: result.append(main(argv)), daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not (made and bound and made[0].started):
        assert thread.is_alive() and time.monotonic() < deadline, result
        time.sleep(0.01)
    return made[0], bound[0].getsockname()[1], thread, result


def test_serve_answers_until_it_is_told_to_stop(runs, monkeypatch, capsys):
    server, port, thread, result = _serve_in_thread(
        monkeypatch, ["serve", runs["image"], runs["gpt"], "--port", "0", "--max-batch", "4"])
    try:
        wait_ready(port)
        status, _, body = post(port, "/v1/models/digits/predict", {"instances": [IMAGE]})
        assert status == 200 and len(body["predictions"]) == 1
        status, _, body = post(port, "/v1/models/gpt/generate",
                               {"prompt": "The ", "max_new_tokens": 3})
        assert status == 200 and len(body["text"]) == 3
    finally:
        server.should_exit = True
        thread.join(TIMEOUT_S)
    assert result == [0]
    assert f"serving digits, gpt on http://127.0.0.1:{port}" in capsys.readouterr().out


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(runs, tmp_path,
                                                                   monkeypatch, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(runs["image"], broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    _, _, thread, result = _serve_in_thread(monkeypatch, ["serve", str(broken), "--port", "0"])
    thread.join(TIMEOUT_S)
    assert result == [1]
    errors = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("error: ")]
    assert len(errors) == 1 and "model.safetensors" in errors[0], errors


# The packages of the serve extra made unimportable, as in an install without the extra.
_WITHOUT_EXTRA = textwrap.dedent("""
    import sys

    class NoServeExtra:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("starlette", "uvicorn", "prometheus_client"):
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None

    sys.meta_path.insert(0, NoServeExtra())
    import importlib.util
    importlib.util.find_spec = lambda name, *a: (
        None if name in ("starlette", "uvicorn", "prometheus_client") else _find(name, *a))
""")


def test_the_core_and_the_batcher_work_without_the_serve_extra(runs):
    code = _WITHOUT_EXTRA.replace("import importlib.util\n", "import importlib.util\n"
                                  "_find = importlib.util.find_spec\n") + textwrap.dedent(f"""
        import layerwise as lw
        from layerwise.serve import Batcher, load_model
        from layerwise.cli.main import main
        with Batcher(lambda xs: [x + 1 for x in xs]) as batcher:
            assert batcher.submit(1).result(10) == 2
        try:
            from layerwise.serve import create_app
        except ImportError as err:
            print("import:", err)
        sys.exit(main(["serve", {runs["image"]!r}]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "import: layerwise.serve.create_app needs starlette, uvicorn, prometheus_client" \
        in done.stdout
    line = one_line_error(done.stderr)
    assert "`uv sync --extra serve`" in line and "`pip install layerwise[serve]`" in line
