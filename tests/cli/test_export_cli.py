"""`layerwise export RUN`: ONNX and plain safetensors files of finished runs, checked against
the run's own model; existing files are never replaced without --force."""

import json

import numpy as np
import pytest

from layerwise.cli.main import main

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny (digits MLP) and gpt-tiny run, trained through the command."""
    out = tmp_path_factory.mktemp("runs")
    for recipe, extra in (("tiny", ["--set", "train_subset=200"]),
                          ("gpt-tiny", ["--set", "corpus_chars=3000"])):
        assert main(["train", "--model", recipe, "--out", str(out), "--name", recipe,
                     "--no-progress", "--no-card", "--epochs", "1", *extra]) == 0
    return out


def _run_model(run_dir):
    from layerwise.train.finished import load_finished_run

    return load_finished_run(str(run_dir)).model


def test_image_run_exports_probabilities_with_a_dynamic_batch(runs, capsys):
    import layerwise as lw

    assert main(["export", str(runs / "tiny")]) == 0
    assert "onnxruntime matches layerwise" in capsys.readouterr().out
    session = ort.InferenceSession(str(runs / "tiny" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    x = np.random.default_rng(1).random((5, 1, 28, 28), dtype=np.float32)
    with lw.no_grad():
        expected = lw.softmax(_run_model(runs / "tiny")(lw.tensor(x)), -1).numpy()
    got = session.run(None, {"images": x})[0]
    assert np.abs(got - expected).max() < 1e-4 and np.allclose(got.sum(1), 1, atol=1e-5)


def test_gpt_run_exports_logits_for_any_batch_and_length(runs):
    import layerwise as lw

    assert main(["export", str(runs / "gpt-tiny"), "--out", str(runs / "gpt.onnx")]) == 0
    session = ort.InferenceSession(str(runs / "gpt.onnx"), providers=["CPUExecutionProvider"])
    model = _run_model(runs / "gpt-tiny")
    for shape in ((3, 5), (1, model.config.block_size)):
        ids = np.random.default_rng(2).integers(0, model.config.vocab_size, shape)
        with lw.no_grad():
            expected = model(lw.tensor(ids))[0].numpy()
        assert np.abs(session.run(None, {"token_ids": ids})[0] - expected).max() < 1e-4


def test_an_existing_file_is_not_replaced_without_force(runs, capsys):
    target = runs / "tiny" / "kept.onnx"
    target.write_bytes(b"the user's file")
    assert main(["export", str(runs / "tiny"), "--out", str(target)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and err.count("\n") == 1
    assert target.read_bytes() == b"the user's file"
    assert main(["export", str(runs / "tiny"), "--out", str(target), "--force"]) == 0
    assert target.read_bytes()[:2] != b"th"


@pytest.mark.parametrize("args, message", [
    (["--out", "{runs}/gpt-tiny/x.onnx"], "inside another run's directory"),
    (["--out", "{runs}"], "is a directory"),
])
def test_bad_output_paths_are_refused_in_one_line(runs, capsys, args, message):
    args = [a.format(runs=runs) for a in args]
    assert main(["export", str(runs / "tiny"), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_run_is_one_line(runs, capsys):
    assert main(["export", str(runs / "nope")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_safetensors_holds_the_state_dict_under_pytorch_names(runs):
    from safetensors import safe_open

    path = runs / "gpt.safetensors"
    assert main(["export", str(runs / "gpt-tiny"), "--format", "safetensors",
                 "--out", str(path)]) == 0
    state = _run_model(runs / "gpt-tiny").state_dict()
    with safe_open(str(path), framework="numpy") as f:
        assert set(f.keys()) == set(state)  # the tied lm_head.weight under both names
        for key in state:
            np.testing.assert_array_equal(f.get_tensor(key), state[key].numpy())
        metadata = f.metadata()
    assert metadata["format"] == "pt" and metadata["layerwise.recipe"] == "gpt-tiny"
    assert json.loads(metadata["layerwise.hyperparameters"])["n_layer"] == 1
    assert json.loads(metadata["layerwise.io"])["output"] == "logits"
