"""The Python example in README.md runs as printed (with fewer epochs) and trains a model."""

import re
from pathlib import Path

import layerwise as lw

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_example_runs_and_learns(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0]
    assert "for epoch in range(5):" in code
    code = code.replace("for epoch in range(5):", "for epoch in range(1):")  # keep it quick
    monkeypatch.chdir(tmp_path)  # the example saves mlp.safetensors in the working directory
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)

    assert namespace["accuracy"] > 0.8  # one epoch of an MLP on 4,000 digits; chance is 0.1
    assert f"test accuracy {namespace['accuracy']:.3f}" in capsys.readouterr().out
    saved = lw.load(tmp_path / "mlp.safetensors")
    assert list(saved) == list(namespace["model"].state_dict())
    for name, value in namespace["model"].state_dict().items():
        assert (saved[name].data == value.data).all()
