import runpy, sys
from pathlib import Path
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
def run_example(name, tmp_path, monkeypatch, capsys, *args):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setattr(sys, "argv", [name, "--quick", "--out", str(tmp_path), *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return capsys.readouterr().out
