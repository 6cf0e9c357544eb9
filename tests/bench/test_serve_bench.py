"""bench/serve.py --quick: the serving load test runs end to end in seconds (its numbers are
not checked: a quick run is a smoke run, and timing is never a test)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "serve.py"
WAYS = ("layerwise, batching on", "layerwise, batching off")


def _bench_serve():
    spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quick_serving_load_test_fills_its_table(tmp_path, monkeypatch, capsys):
    bench = _bench_serve()
    monkeypatch.chdir(tmp_path)
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 8 and cells[0] in ("mlp", "cnn"):
            rows[(cells[0], cells[1], int(cells[2]))] = cells[3:]
    for model in ("mlp", "cnn"):
        for way in WAYS:
            for clients in bench.CONCURRENCY:
                requests, rps, p50, p99, mean_batch = rows[(model, way, clients)]
                assert int(requests) >= clients  # each client answered, without errors
                assert float(rps) > 0 and 0 < float(p50) <= float(p99)
                if way.endswith("off"):
                    assert float(mean_batch) == 1.0
        measured = all((model, "onnxruntime, batching on", c) in rows for c in bench.CONCURRENCY)
        assert measured or f"{model}, onnxruntime: not measured: " in out
