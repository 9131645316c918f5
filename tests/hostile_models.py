"""Hostile models for the robustness campaign (``tests/test_hostile.py``).

Each case builds, under a root folder, the layout an attacker (or an unusual but
legitimate setup) would hand over:

- ``model/``: the folder holding the model the commands get;
- ``secret/``: files outside it that a model tries to reach; no command may open them;
- ``out/``: the output folder (a small full tmpfs for the disk-full cases).

:data:`CASES` maps a case name to its builder and the exit status every command must
give (0: handled normally, 2: refused in one line). Builders start from the committed
fixtures (``fixtures/``: real torch.onnx exports, legacy and dynamo).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EXTERNAL = "mnist_cnn_dynamo"  # has external data; its layer fc1 is widenable
EMBEDDED = "mlp_legacy"  # embedded weights; layer_1 is widenable


@dataclass
class Built:
    """A built case: the model to hand to the commands and the layer to grow."""

    model: Path
    layer: str
    width: int
    #: Folders whose files the commands may read (besides the Python installation).
    readable: list[Path]


def _copy(stem: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for src in FIXTURES.glob(f"{stem}.onnx*"):
        shutil.copyfile(src, folder / src.name)
    return folder / f"{stem}.onnx"


def _set_location(model: Path, location: str) -> None:
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(proto, str(model))


def _external(root: Path) -> Built:
    return Built(_copy(EXTERNAL, root / "model"), "fc1", 70, [root / "model"])


def _moved_data(root: Path) -> tuple[Path, Path]:
    """The external model in ``model/``, its data file moved to ``secret/``."""
    built = _external(root)
    data = built.model.with_name(built.model.name + ".data")
    (root / "secret").mkdir()
    secret = root / "secret" / data.name
    shutil.move(data, secret)
    return built.model, secret


def location_dotdot(root: Path) -> Built:
    model, secret = _moved_data(root)
    _set_location(model, f"../secret/{secret.name}")
    return Built(model, "fc1", 70, [root / "model"])


def location_absolute(root: Path) -> Built:
    model, secret = _moved_data(root)
    _set_location(model, str(secret))
    return Built(model, "fc1", 70, [root / "model"])


def symlinked_data_file(root: Path) -> Built:
    model, secret = _moved_data(root)
    model.with_name(secret.name).symlink_to(os.path.relpath(secret, model.parent))
    return Built(model, "fc1", 70, [root / "model"])


def symlinked_data_folder(root: Path) -> Built:
    model, secret = _moved_data(root)
    (model.parent / "weights").symlink_to(os.path.relpath(secret.parent, model.parent))
    _set_location(model, f"weights/{secret.name}")
    return Built(model, "fc1", 70, [root / "model"])


def hard_linked_data_file(root: Path) -> Built:
    model, secret = _moved_data(root)
    os.link(secret, model.with_name(secret.name))
    return Built(model, "fc1", 70, [root / "model"])


def _hub_cache(root: Path) -> tuple[Path, Path, Path]:
    """``model/models--org--name/{blobs,snapshots/rev}`` as huggingface_hub lays it out."""
    cache = root / "model" / "models--org--name"
    blobs, snapshot = cache / "blobs", cache / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    shutil.copyfile(FIXTURES / f"{EXTERNAL}.onnx", blobs / "8f1c0b7e")
    model = snapshot / f"{EXTERNAL}.onnx"
    model.symlink_to("../../blobs/8f1c0b7e")
    return model, blobs, snapshot


def hub_cache(root: Path) -> Built:
    model, blobs, snapshot = _hub_cache(root)
    shutil.copyfile(FIXTURES / f"{EXTERNAL}.onnx.data", blobs / "b2d94a61")
    (snapshot / f"{EXTERNAL}.onnx.data").symlink_to("../../blobs/b2d94a61")
    return Built(model, "fc1", 70, [root / "model"])


def hub_cache_data_escapes(root: Path) -> Built:
    model, _, snapshot = _hub_cache(root)
    (root / "secret").mkdir()
    secret = root / "secret" / "b2d94a61"
    shutil.copyfile(FIXTURES / f"{EXTERNAL}.onnx.data", secret)
    (snapshot / f"{EXTERNAL}.onnx.data").symlink_to(os.path.relpath(secret, snapshot))
    return Built(model, "fc1", 70, [root / "model"])


#: Names no terminal, file system or Python identifier should take raw.
HOSTILE_NAMES = [
    "\x1b[31mred\x1b[0m\x1b]0;pwned\x07",
    "over\rwrite",
    "forged\nerror: all good",
    "../../etc/passwd",
    "a/b\\c:d",
    "..",
    "nul\x00byte",
    "x" * 5000,
]


def hostile_names(root: Path) -> Built:
    """mlp_legacy with every node, initializer and intermediate value renamed hostilely."""
    folder = root / "model"
    folder.mkdir(parents=True)
    proto = onnx.load(str(FIXTURES / f"{EMBEDDED}.onnx"))
    graph = proto.graph
    keep = {v.name for v in (*graph.input, *graph.output)}
    renamed: dict[str, str] = {}
    values = [t.name for t in graph.initializer] + [o for n in graph.node for o in n.output]
    for k, name in enumerate(v for v in values if v not in keep):
        renamed[name] = f"{HOSTILE_NAMES[k % len(HOSTILE_NAMES)]}.{k}"
    for tensor in graph.initializer:
        tensor.name = renamed.get(tensor.name, tensor.name)
    for k, node in enumerate(graph.node):
        node.name = f"{HOSTILE_NAMES[k % len(HOSTILE_NAMES)]}#{k}"
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.output[:] = [renamed.get(o, o) for o in node.output]
    model = folder / "hostile_names.onnx"
    onnx.save(proto, str(model))
    return Built(model, graph.node[0].name, 7, [folder])


def non_finite_weights(root: Path) -> Built:
    """mlp_legacy with an Inf and a NaN in its last bias: both models give NaN/Inf outputs."""
    folder = root / "model"
    folder.mkdir(parents=True)
    proto = onnx.load(str(FIXTURES / f"{EMBEDDED}.onnx"))
    for i, tensor in enumerate(proto.graph.initializer):
        if tensor.name in ("layer_3.bias", "layer_1.weight"):
            array = numpy_helper.to_array(tensor).copy()
            array.flat[0] = np.inf
            if tensor.name == "layer_3.bias":
                array.flat[1] = np.nan
            proto.graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
    model = folder / "non_finite.onnx"
    onnx.save(proto, str(model))
    return Built(model, "layer_1", 7, [folder])


def external_intact(root: Path) -> Built:
    return _external(root)


def embedded_intact(root: Path) -> Built:
    return Built(_copy(EMBEDDED, root / "model"), "layer_1", 7, [root / "model"])


@dataclass(frozen=True)
class Case:
    build: Callable[[Path], Built]
    #: Exit status of every command (writers on a full disk: see ``disk_full``).
    code: int
    #: Text the refusal line must contain.
    message: str = ""
    #: The output folder is a full tmpfs (needs root to mount).
    disk_full: bool = False


CASES: dict[str, Case] = {
    "intact, external data": Case(external_intact, 0),
    "location ../": Case(location_dotdot, 2, "outside the model's folder"),
    "absolute location": Case(location_absolute, 2, "outside the model's folder"),
    "data file symlinked outside": Case(symlinked_data_file, 2, "outside the model's folder"),
    "data folder symlinked outside": Case(symlinked_data_folder, 2, "outside the model's folder"),
    "data file hard-linked from outside": Case(hard_linked_data_file, 2, "hard links"),
    "hub cache layout": Case(hub_cache, 0),
    "hub cache, data links outside": Case(hub_cache_data_escapes, 2, "outside the model's folder"),
    "hostile names": Case(hostile_names, 0),
    "NaN and Inf weights": Case(non_finite_weights, 0),
    "disk full, external data": Case(external_intact, 0, "No space left on device", disk_full=True),
    "disk full, embedded": Case(embedded_intact, 0, "No space left on device", disk_full=True),
}
