"""Fuzz: damaged model files through every command of the CLI.

A model file (or its external data) is truncated, has bytes flipped, is replaced by
garbage, is empty or a directory, loses its data file, or records a wrong external-data
offset, length or location. Then ``widen``, ``inspect``, ``verify`` and ``diff`` must:

- exit 0 (the damage left a valid model: a normal result; a written model passes
  ``onnx.checker``'s full check), 1 (``verify``/``diff`` found differences) or 2 with one
  ``error: ...`` line; never a traceback;
- write nothing else: no output on failure, no temporary file left beside it;
- leave the damaged input and its data byte-identical.

``ONNXGROW_FUZZ_LONG=1`` raises the example counts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import onnxgrow
from tests.helpers.paths import FIXTURES
from tests.helpers.robustness import assert_checker_passes, assert_clean, listing, model_files, run_cli, untouched

LONG = os.environ.get("ONNXGROW_FUZZ_LONG") == "1"
#: Fixture stem → a widening its intact model accepts.
WIDENINGS = {"mlp_legacy": ("layer_1", "7"), "mlp_dynamo": ("layer_2", "9"), "mnist_cnn_dynamo": ("fc1", "70")}
COMMANDS = ["widen", "deepen", "inspect", "verify", "diff", "export"]


def byte_settings(examples: int) -> settings:
    return settings(max_examples=examples * 20 if LONG else examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def copy_fixture(stem: str, folder: Path) -> tuple[Path, Path]:
    """The fixture and its data in ``folder`` twice: an intact reference and a copy to damage."""
    intact, damaged = folder / "intact", folder / "damaged"
    for target in (intact, damaged):
        target.mkdir()
        for src in FIXTURES.glob(f"{stem}.onnx*"):
            shutil.copyfile(src, target / src.name)
    return intact / f"{stem}.onnx", damaged / f"{stem}.onnx"


def run_command(command: str, stem: str, intact: Path, damaged: Path, out: Path) -> int:
    """Run ``command`` on the damaged model and check the robustness properties."""
    watched = [damaged.parent]
    before = listing(damaged.parent)
    with untouched(*watched):
        if command == "widen":
            node, width = WIDENINGS[stem]
            result = run_cli("widen", damaged, "--node", node, "--to", width, "-o", out)
        elif command == "deepen":
            result = run_cli("deepen", damaged, "--after", WIDENINGS[stem][0], "-o", out)
        elif command == "export":
            result = run_cli("export", damaged, "--to", "state-dict", "-o", out.with_suffix(".safetensors"))
        elif command == "inspect":
            result = run_cli("inspect", damaged)
        elif command == "verify":
            result = run_cli("verify", intact, damaged)
        else:
            result = run_cli("diff", intact, damaged)
    allowed = (0, 1, 2) if command in ("verify", "diff") else (0, 2)
    assert_clean(result, allowed)
    assert listing(damaged.parent) == before, "files left beside the damaged model"
    if command in ("widen", "deepen", "export"):
        written = {out.name, out.with_suffix(".safetensors").name}
        if out.exists():
            written |= {p.name for p in model_files(out)}
        assert listing(out.parent) - written == set(), "temporary files left"
        if result.code != 0:
            assert listing(out.parent) == set()
        elif command != "export":
            assert_checker_passes(out)
    return result.code


# ----- random damage ------------------------------------------------------------------------
def truncate(data: bytes, draw: st.DrawFn) -> bytes:
    return data[: draw(st.integers(0, max(len(data) - 1, 0)))]


def flip(data: bytes, draw: st.DrawFn) -> bytes:
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(buffer) - 1))
        buffer[position] ^= draw(st.integers(1, 255))
    return bytes(buffer)


def garbage(data: bytes, draw: st.DrawFn) -> bytes:
    return draw(st.binary(min_size=0, max_size=256))


def splice(data: bytes, draw: st.DrawFn) -> bytes:
    """Insert or delete a run of bytes somewhere: lengths and offsets stop matching."""
    position = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        return data[:position] + draw(st.binary(min_size=1, max_size=16)) + data[position:]
    return data[:position] + data[position + draw(st.integers(1, 16)):]


DAMAGE: dict[str, Callable[[bytes, st.DrawFn], bytes]] = {
    "truncate": truncate, "flip": flip, "garbage": garbage, "splice": splice}


@st.composite
def damage_cases(draw: st.DrawFn) -> tuple[str, str, str, str]:
    stem = draw(st.sampled_from(sorted(WIDENINGS)))
    target = "data" if stem == "mnist_cnn_dynamo" and draw(st.booleans()) else "model"
    return stem, target, draw(st.sampled_from(sorted(DAMAGE))), draw(st.sampled_from(COMMANDS))


@byte_settings(150)
@given(case=damage_cases(), data=st.data())
def test_damaged_files_through_the_cli(case: tuple[str, str, str, str], data: st.DataObject) -> None:
    stem, target, damage, command = case
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        intact, damaged = copy_fixture(stem, folder)
        victim = damaged if target == "model" else damaged.with_name(damaged.name + ".data")
        victim.write_bytes(DAMAGE[damage](victim.read_bytes(), data.draw))
        (folder / "out").mkdir()
        code = run_command(command, stem, intact, damaged, folder / "out" / "grown.onnx")
        event(f"{damage} {target}, {command}: exit {code}")


# ----- structural damage --------------------------------------------------------------------
def _edit_external(model: Path, key: str, value: str, tensor: str = "fc1.weight") -> None:
    proto = onnx.load(str(model), load_external_data=False)
    for initializer in proto.graph.initializer:
        if initializer.name == tensor:
            entries = {e.key: e for e in initializer.external_data}
            entry = entries.get(key) or initializer.external_data.add()
            entry.key, entry.value = key, value
    onnx.save(proto, str(model))


def _replace_with_directory(model: Path) -> None:
    model.unlink()
    model.mkdir()


def _non_utf8(place: Callable[[onnx.ModelProto], None]) -> Callable[[Path], None]:
    """Regression (fuzz): protobuf hands over bytes for a string that is not UTF-8; names.py and
    inspect crashed on them. ``place`` puts the marker '@@@@' where the bad bytes go."""

    def damage(model: Path) -> None:
        proto = onnx.load(str(model), load_external_data=False)
        place(proto)
        model.write_bytes(proto.SerializeToString().replace(b"@@@@", b"\xee\xff\xfe\xfd"))

    return damage


def _undefined_attribute_type(model: Path) -> None:
    """Regression (fuzz): an attribute of type UNDEFINED made onnx-ir's shape inference fail half-way,
    leaving every weight a graph input (so 'computed at run time'), and the save raise SerdeError."""
    proto = onnx.load(str(model), load_external_data=False)
    node = next(n for n in proto.graph.node if n.op_type == "Conv")
    node.attribute[0].type = onnx.AttributeProto.UNDEFINED
    onnx.save(proto, str(model))


def _proto_edit(edit: Callable[[onnx.ModelProto], None]) -> Callable[[Path], None]:
    def damage(model: Path) -> None:
        proto = onnx.load(str(model), load_external_data=False)
        edit(proto)
        onnx.save(proto, str(model))

    return damage


def _break_op_type(proto: onnx.ModelProto) -> None:
    """Regression (fuzz): a flipped length byte made an op type 'Gemm*\\nalph'; the error took two lines."""
    next(n for n in proto.graph.node if n.op_type == "Relu").op_type = "Relu*\nalph"


STRUCTURAL: dict[str, Callable[[Path], None]] = {
    "IR version 2": _proto_edit(lambda m: setattr(m, "ir_version", 2)),  # regression (fuzz): output failed the checker
    "IR version 99": _proto_edit(lambda m: setattr(m, "ir_version", 99)),
    # regression (fuzz): before IR 4 initializers must be graph inputs; the output failed the checker
    "IR version 3": _proto_edit(lambda m: setattr(m, "ir_version", 3)),
    "op type with a line break": _proto_edit(_break_op_type),
    "node name not UTF-8": _non_utf8(lambda m: setattr(m.graph.node[0], "name", "@@@@")),
    "producer name not UTF-8": _non_utf8(lambda m: setattr(m, "producer_name", "@@@@")),
    "attribute of undefined type": _undefined_attribute_type,
    # regression (fuzz): a flipped byte left a weight's element type undefined; the memory estimate raised
    "initializer of undefined element type": _proto_edit(lambda m: setattr(m.graph.initializer[0], "data_type", 0)),
    "empty file": lambda m: m.write_bytes(b""),
    "directory": _replace_with_directory,
    "missing data file": lambda m: m.with_name(m.name + ".data").unlink(),
    "empty data file": lambda m: m.with_name(m.name + ".data").write_bytes(b""),
    "data file is a directory": lambda m: (m.with_name(m.name + ".data").unlink(),
                                           m.with_name(m.name + ".data").mkdir()),
    "offset past the end": lambda m: _edit_external(m, "offset", "955000"),
    "huge offset": lambda m: _edit_external(m, "offset", str(2**62)),
    "negative offset": lambda m: _edit_external(m, "offset", "-4"),
    "unaligned offset": lambda m: _edit_external(m, "offset", "3"),
    "offset not a number": lambda m: _edit_external(m, "offset", "twelve"),
    "length too small": lambda m: _edit_external(m, "length", "100"),
    "length too large": lambda m: _edit_external(m, "length", "99999999"),
    "location escapes the folder": lambda m: _edit_external(m, "location", "../intact/mnist_cnn_dynamo.onnx.data"),
    "absolute location": lambda m: _edit_external(m, "location", str(FIXTURES / "mnist_cnn_dynamo.onnx.data")),
    "location is the folder": lambda m: _edit_external(m, "location", "."),
    "empty location": lambda m: _edit_external(m, "location", ""),
    "location of another tensor's file": lambda m: _edit_external(m, "location", m.name),
}
#: Damage that leaves a valid model behind: commands may succeed.
STILL_VALID = {"unaligned offset"}
#: An unknown op loads: inspect lists it (exit 0), diff reports it (exit 1), the rest refuse.
EXIT_CODES = {("op type with a line break", "inspect"): 0, ("op type with a line break", "diff"): 1,
              ("op type with a line break", "export"): 0}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", sorted(STRUCTURAL))
def test_structural_damage(tmp_path: Path, damage: str, command: str) -> None:
    stem = "mnist_cnn_dynamo"
    intact, damaged = copy_fixture(stem, tmp_path)
    STRUCTURAL[damage](damaged)
    (tmp_path / "out").mkdir()
    code = run_command(command, stem, intact, damaged, tmp_path / "out" / "grown.onnx")
    if damage not in STILL_VALID:
        assert code == EXIT_CODES.get((damage, command), 2), f"{damage}: {command} exited {code}"


def test_subprocess_prints_no_traceback(tmp_path: Path) -> None:
    """The installed entry point, not only click's test runner: one line, exit 2."""
    import subprocess
    import sys

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x0a\xff\xff\xff\xff\x0f garbage")
    proc = subprocess.run([sys.executable, "-m", "onnxgrow", "inspect", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")


def test_every_damaged_file_is_a_listed_file(tmp_path: Path) -> None:
    """The fixture really has external data, so the data-file cases test something."""
    _, damaged = copy_fixture("mnist_cnn_dynamo", tmp_path)
    assert [p.name for p in model_files(damaged)] == ["mnist_cnn_dynamo.onnx", "mnist_cnn_dynamo.onnx.data"]


def test_unserializable_custom_node(tmp_path: Path) -> None:
    """Regression (fuzz): a node onnx-ir cannot serialize (here a custom op's attribute of
    undefined type, which no schema checks at load) made shape inference fail half-way and
    leave every weight a graph input; the save then raised SerdeError with a traceback."""
    stem = "mnist_cnn_dynamo"
    intact, damaged = copy_fixture(stem, tmp_path)
    proto = onnx.load(str(damaged), load_external_data=False)
    node = proto.graph.node.add(op_type="Mystery", domain="custom.ops", name="mystery", input=["x"], output=["unused"])
    node.attribute.add(name="knob", type=onnx.AttributeProto.UNDEFINED)
    proto.opset_import.add(domain="custom.ops", version=1)
    onnx.save(proto, str(damaged))
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "grown.onnx"
    expected = {"inspect": 0, "diff": 1, "widen": 2, "deepen": 2, "verify": 2, "export": 0}
    assert {c: run_command(c, stem, intact, damaged, out) for c in COMMANDS} == expected
    fc1 = next(layer for layer in onnxgrow.inspect_model(damaged).layers if layer.name == "fc1")
    assert fc1.widenable, fc1.reason
