"""The export target registry (:mod:`onnxgrow.export.targets`).

- A target registered from outside onnxgrow (here a toy that writes the ONNX model and a
  ``config.json`` into a folder, checked by running the written model in onnxruntime)
  exports through the CLI with nothing else changed: ``--help`` lists it with its default
  output, the default output name comes from it, the output is checked and appears whole,
  an earlier output folder is replaced whole, and a folder that is not an earlier output
  or that holds the input is refused before anything is written.
- Every registered target is listed by ``export --help`` with its help phrase.
- A writer library's own temporary files go with the save: ``export --to keras`` onto a
  full disk exits 2 and leaves nothing, in ``$TMPDIR`` either (Keras makes an ``assets``
  folder there and left it behind when writing the zip failed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from onnxgrow.export.targets.registry import TARGETS
from tests.helpers.cli import run
from tests.helpers.paths import FIXTURES, REPO
from tests.helpers.robustness import hashes, listing

#: Registers the toy target, then runs the CLI once per argument list of argv[1] (JSON) and
#: prints each run's exit code, stdout and stderr (JSON).
TOY_TARGET = textwrap.dedent('''
    import json, sys
    from click.testing import CliRunner
    from onnxgrow.export.targets.registry import Exported, FolderOutput, export_target

    @export_target("onnx-folder", FolderOutput(default="-onnx", holds="config.json"),
                   help="the ONNX model in a folder (model.onnx, config.json)",
                   counts="initializers (ONNX folder; onnxruntime.InferenceSession(path + '/model.onnx'))",
                   checked_as="ONNX folder")
    def build_onnx_folder(model, settings):
        import onnx_ir as ir
        import onnxruntime as ort

        def write(folder):
            ir.save(model, folder / "model.onnx")
            (folder / "config.json").write_text(json.dumps({"inputs": [v.name for v in model.graph.inputs]}))

        def load(folder):
            session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            return lambda feeds: dict(zip(names, session.run(names, dict(feeds))))

        return Exported(len(model.graph.initializers), [], write, load)

    from onnxgrow.cli import main
    results = []
    for args in json.loads(sys.argv[1]):
        result = CliRunner().invoke(main, args)
        results.append({"code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr})
    print(json.dumps(results))
''')


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every folder the toy target's runs use, prepared first, then the runs in one process."""
    root = tmp_path_factory.mktemp("toy_target")
    model = root / "mlp_dynamo.onnx"
    shutil.copy(FIXTURES / "mlp_dynamo.onnx", model)
    earlier = root / "earlier"
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")
    (earlier / "stale.bin").write_text("from an earlier export")
    others = root / "others"
    others.mkdir()
    (others / "notes.txt").write_text("not an export")
    holding = root / "holding"
    holding.mkdir()
    (holding / "config.json").write_text("{}")
    held = holding / "held.onnx"
    shutil.copy(FIXTURES / "mlp_dynamo.onnx", held)
    before = hashes([others, holding, model])
    runs = {
        "help": ["export", "--help"],
        "default output": ["export", str(model), "--to", "onnx-folder", "--samples", "2"],
        "earlier output": ["export", str(model), "--to", "onnx-folder", "-o", str(earlier)],
        "other folder": ["export", str(model), "--to", "onnx-folder", "-o", str(others)],
        "folder holding the input": ["export", str(held), "--to", "onnx-folder", "-o", str(holding)],
    }
    proc = subprocess.run([sys.executable, "-c", TOY_TARGET, json.dumps(list(runs.values()))], capture_output=True,
                          text=True, timeout=600, check=False, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = dict(zip(runs, json.loads(proc.stdout.splitlines()[-1])))
    return {"root": root, "model": model, "earlier": earlier, "results": results, "before": before,
            "untouched": [others, holding, model]}


def test_toy_target_is_in_the_help(toy: dict) -> None:
    result = toy["results"]["help"]
    assert result["code"] == 0, result
    # click may wrap a line after the hyphen of "onnx-folder": the words joined again
    text = re.sub(r"(\w)- (\w)", r"\1-\2", " ".join(result["stdout"].split()))
    assert "[state-dict|torch|keras|keras-weights|hf|onnx-folder]" in text
    assert "onnx-folder: the ONNX model in a folder (model.onnx, config.json)." in text
    assert "<stem>.weights.h5, <stem>-hf/, <stem>-onnx/)" in text


def test_toy_target_writes_its_default_folder_checked(toy: dict) -> None:
    result = toy["results"]["default output"]
    out = toy["root"] / "mlp_dynamo-onnx"
    assert result["code"] == 0, result
    lines = result["stdout"].splitlines()
    assert lines[0] == f"wrote {out}: 6 initializers (ONNX folder; onnxruntime.InferenceSession(path + '/model.onnx'))"
    assert lines[1].startswith("PASSED") and "on 2 sample(s)" in lines[1]
    assert listing(out) == {"model.onnx", "config.json"}
    assert json.loads((out / "config.json").read_text()) == {"inputs": ["x"]}
    assert not [name for name in listing(toy["root"]) if name.startswith(".")]


def test_toy_target_replaces_an_earlier_output_whole(toy: dict) -> None:
    result = toy["results"]["earlier output"]
    assert result["code"] == 0, result
    assert listing(toy["earlier"]) == {"model.onnx", "config.json"}


@pytest.mark.parametrize(("run_name", "message"), [
    ("other folder", "is a folder but not an earlier --to onnx-folder output (it has no config.json)"),
    ("folder holding the input", "refusing to replace a folder holding the input"),
])
def test_toy_target_refuses_a_folder_it_must_not_replace(toy: dict, run_name: str, message: str) -> None:
    result = toy["results"][run_name]
    assert result["code"] == 2, result
    lines = result["stderr"].splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result["stderr"]
    assert hashes(toy["untouched"]) == toy["before"]


def test_every_registered_target_is_in_the_help() -> None:
    code, stdout, _ = run("export", "--help")
    text = " ".join(stdout.split())
    assert code == 0 and f"[{'|'.join(TARGETS)}]" in text
    for target in TARGETS.values():
        assert f"{target.name}: {' '.join(target.help.split())}" in text


#: ``export --to keras`` with the write of the ``.keras`` zip failing for a full disk.
KERAS_FULL_DISK = textwrap.dedent('''
    import errno, os, sys
    from keras.src.saving import saving_lib

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    saving_lib._write_to_zip_recursively = full_disk  # Keras copies its assets folder into the zip
    from onnxgrow.cli import main
    main(sys.argv[1:])
''')


def test_keras_export_onto_a_full_disk_leaves_no_temporary_folder(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    temp, out = tmp_path / "temp", tmp_path / "out"
    temp.mkdir()
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="torch", TMPDIR=str(temp))
    proc = subprocess.run([sys.executable, "-c", KERAS_FULL_DISK, "export", str(FIXTURES / "mlp_dynamo.onnx"),
                           "--to", "keras", "-o", str(out / "m.keras")],
                          capture_output=True, text=True, timeout=600, check=False, cwd=REPO, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1] == f"error: {out / 'm.keras'}: cannot write (No space left on device); " \
                                           "nothing written"
    assert listing(out) == set()
    # PyTorch keeps its compiler cache there (torchinductor_<user>), made on import, not by the export
    assert [p.name for p in temp.iterdir() if not p.name.startswith("torchinductor_")] == []


def test_keras_export_of_a_model_whose_every_tensor_is_external(tmp_path: Path) -> None:
    """``save_as_external_data(..., size_threshold=0)`` is a common layout: ``export --to keras``
    on it was a ``BufferError: cannot close exported pointers exist`` traceback (the check
    closed the data file's mapping while the Keras model's weights still viewed it)."""
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    import onnx

    src = tmp_path / "m.onnx"
    onnx.save(onnx.load(str(FIXTURES / "mlp_legacy.onnx")), str(src), save_as_external_data=True,
              location="m.data", size_threshold=0)
    before = hashes([src, tmp_path / "m.data"])
    out = tmp_path / "m.keras"
    env = dict(os.environ, PYTHONPATH=str(REPO), KERAS_BACKEND="torch")
    proc = subprocess.run([sys.executable, "-m", "onnxgrow", "export", str(src), "--to", "keras", "-o", str(out)],
                          capture_output=True, text=True, timeout=600, check=False, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "PASSED: max abs error 0" in proc.stdout and out.is_file()
    assert hashes([src, tmp_path / "m.data"]) == before
