"""Hostile models for the robustness campaign (``tests/robustness/test_hostile.py``).

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

from tests.helpers.paths import FIXTURES

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
    "tab\tand\x7fdel\x9bcsi",
    "x" * 5000,
]  # a NUL is refused at load (MALFORMED)


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


# ----- malformed models: what onnx.checker refuses and onnxruntime settles, or NUL -------------------
Edit = Callable[[onnx.ModelProto], None]


def mlp_edited(edit: Edit, folder: Path, name: str) -> Path:
    """mlp_legacy (``x → layer_1 → Relu → layer_2 → Relu → layer_3 → y``) edited, saved unchecked."""
    folder.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(FIXTURES / f"{EMBEDDED}.onnx"))
    edit(proto)
    path = folder / f"{name}.onnx"
    onnx.save(proto, str(path))
    return path


def _zeros_copy(proto: onnx.ModelProto, name: str = "layer_1.weight") -> None:
    """A second initializer of ``name``, zeros: onnxruntime runs this copy (the last)."""
    array = np.zeros(numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == name)).shape,
                     np.float32)
    proto.graph.initializer.append(numpy_helper.from_array(array, name))


def _rename_value(proto: onnx.ModelProto, old: str, new: str) -> None:
    for tensor in proto.graph.initializer:
        if tensor.name == old:
            tensor.name = new
    for node in proto.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]


def _sparse_copy(proto: onnx.ModelProto) -> None:
    values = numpy_helper.from_array(np.array([5.0], np.float32), "layer_3.bias")
    indices = numpy_helper.from_array(np.array([0], np.int64), "layer_3.bias_indices")
    proto.graph.sparse_initializer.append(onnx.helper.make_sparse_tensor(values, indices, [2]))


def _shadowing_subgraph(proto: onnx.ModelProto) -> None:
    """An If whose then-branch defines ``/Relu_output_0`` again, a value of the main graph."""
    graph = proto.graph
    out = onnx.helper.make_tensor_value_info
    then = onnx.helper.make_graph([onnx.helper.make_node("Neg", ["/layer_1/Gemm_output_0"], ["/Relu_output_0"])],
                                  "then", [], [out("/Relu_output_0", onnx.TensorProto.FLOAT, None)])
    other = onnx.helper.make_graph([onnx.helper.make_node("Neg", ["/layer_1/Gemm_output_0"], ["neg"])],
                                   "else", [], [out("neg", onnx.TensorProto.FLOAT, None)])
    graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    graph.node.insert(2, onnx.helper.make_node("If", ["cond"], ["branch"], name="/If", then_branch=then,
                                               else_branch=other))
    graph.output.append(out("branch", onnx.TensorProto.FLOAT, None))


def _unsorted(proto: onnx.ModelProto) -> None:
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(nodes))


#: Malformed models, each refused at load by every command: edit of mlp_legacy → words of the error line.
MALFORMED: dict[str, tuple[Edit, str]] = {
    "duplicate initializer": (_zeros_copy, "two initializers are named 'layer_1.weight'"),
    "duplicate sparse initializer": (_sparse_copy, "two initializers are named 'layer_3.bias'"),
    "initializer without a name": (lambda p: _rename_value(p, "layer_1.weight", ""), "an initializer has no name"),
    "NUL in an initializer name": (lambda p: _rename_value(p, "layer_1.weight", "layer_1.we\0ight"),
                                   "'layer_1.we\\x00ight' holds a NUL character"),
    "NUL in a node name": (lambda p: setattr(p.graph.node[0], "name", "/layer_1\0/Gemm"), "holds a NUL character"),
    "NUL in a value name": (lambda p: _rename_value(p, "/Relu_output_0", "relu\0"), "holds a NUL character"),
    "NUL in a graph name": (lambda p: setattr(p.graph, "name", "main\0"), "holds a NUL character"),
    "NUL in a metadata key": (lambda p: p.metadata_props.add(key="a\0b", value="1"), "holds a NUL character"),
    "duplicate graph input": (lambda p: p.graph.input.append(p.graph.input[0]), "two graph inputs are named 'x'"),
    "output redefines a graph input": (lambda p: _rename_value(p, "/Relu_output_0", "x"),
                                       "output 'x' is also a graph input"),
    "output redefines an initializer": (lambda p: _rename_value(p, "/Relu_output_0", "layer_3.bias"),
                                        "output 'layer_3.bias' is also an initializer"),
    "two nodes define one value": (lambda p: _rename_value(p, "/Relu_output_0", "/layer_1/Gemm_output_0"),
                                   "is also another node's output"),
    "subgraph redefines an outer value": (_shadowing_subgraph, "is also a value of an enclosing graph"),
    "undefined node input": (lambda p: p.graph.node[2].input.__setitem__(0, "nowhere"),
                             "input 'nowhere' of Gemm node '/layer_2/Gemm' is defined nowhere"),
    "undefined graph output": (lambda p: setattr(p.graph.output[0], "name", "nowhere"),
                               "output 'nowhere' is defined nowhere"),
    "duplicate node name": (lambda p: [setattr(n, "name", "same") for n in p.graph.node], "two nodes are named 'same'"),
    "duplicate attribute": (lambda p: p.graph.node[0].attribute.append(onnx.helper.make_attribute("alpha", 2.0)),
                            "the attribute 'alpha' is given twice"),
    "duplicate metadata key": (lambda p: [p.metadata_props.add(key="k", value=v) for v in "12"],
                               "the key 'k' is given twice"),
    "duplicate opset import": (lambda p: p.opset_import.add(domain="", version=13), "the domain '' is given twice"),
    "duplicate local function": (lambda p: p.functions.extend([onnx.helper.make_function(
        "custom", "f", ["a"], ["b"], [onnx.helper.make_node("Relu", ["a"], ["b"])],
        [onnx.helper.make_opsetid("", 17)])] * 2), "local function custom::f is defined twice"),
    "required output unnamed": (lambda p: (p.graph.node[1].output.__setitem__(0, ""),
                                           p.graph.node[2].input.__setitem__(0, "")),
                                "Relu node '/Relu' leaves its output 0 (Y) unnamed"),
}
#: Malformed for onnx.checker, kept by onnxgrow (onnxruntime runs them): edit of mlp_legacy.
CHECKER_TOO_STRICT: dict[str, Edit] = {
    "nodes out of topological order": _unsorted,
    "graph output without a shape": lambda p: p.graph.output[0].type.tensor_type.ClearField("shape"),
    "graph without a name": lambda p: setattr(p.graph, "name", ""),
}


def malformed(name: str, root: Path) -> Path:
    """The model of :data:`MALFORMED` (or :data:`CHECKER_TOO_STRICT`) ``name`` in ``root``."""
    edit = MALFORMED[name][0] if name in MALFORMED else CHECKER_TOO_STRICT[name]
    return mlp_edited(edit, root, name.replace(" ", "_"))


def _malformed_case(name: str) -> Callable[[Path], Built]:
    def build(root: Path) -> Built:
        return Built(malformed(name, root / "model"), "layer_1", 7, [root / "model"])

    build.__name__ = f"malformed_{name.replace(' ', '_')}"
    return build


def tf_like_dense(path: Path, layers: list[str], width: int = 16, classes: int = 8) -> Path:
    """Dense layers named as tf2onnx names a Keras ``Sequential``'s (``sequential/<layer>/MatMul``,
    ``sequential/<layer>/BiasAdd/ReadVariableOp:0``), so ``--to keras-weights`` and ``--to keras``
    find them by those names; unchecked, so any name goes."""
    nodes, initializers, x = [], [], "x"
    for i, name in enumerate(layers):
        out = classes if i == len(layers) - 1 else width
        w, b = f"sequential/{name}/MatMul/ReadVariableOp:0", f"sequential/{name}/BiasAdd/ReadVariableOp:0"
        kernel = np.random.default_rng(i).standard_normal((width, out)).astype(np.float32)
        initializers += [numpy_helper.from_array(kernel, w), numpy_helper.from_array(np.full(out, 0.1, np.float32), b)]
        nodes += [onnx.helper.make_node("MatMul", [x, w], [f"sequential/{name}/MatMul:0"],
                                        name=f"sequential/{name}/MatMul"),
                  onnx.helper.make_node("Add", [f"sequential/{name}/MatMul:0", b], [f"sequential/{name}/BiasAdd:0"],
                                        name=f"sequential/{name}/BiasAdd")]
        x = f"sequential/{name}/BiasAdd:0"
    graph = onnx.helper.make_graph(nodes, "sequential", [onnx.helper.make_tensor_value_info("x", 1, ["N", width])],
                                   [onnx.helper.make_tensor_value_info(x, 1, ["N", classes])], initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 15)])
    model.producer_name = "tf2onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


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
    **{name: Case(_malformed_case(name), 2, MALFORMED[name][1])
       for name in ("duplicate initializer", "NUL in a node name", "output redefines an initializer",
                    "undefined node input", "duplicate node name", "duplicate attribute")},
    "nodes out of topological order": Case(_malformed_case("nodes out of topological order"), 0),
}
