"""Loading and saving models on onnx-ir, lazily and atomically.

Rules:
- Loading parses the graph only; weights stored as external data stay memory-mapped
  until a rewrite touches them. Every external-data reference is checked against its
  file (exists, long enough, inside the model's folder with symlinks followed, see
  :func:`check_external_data`) so a broken or escaping model fails here, in one line,
  before any command reads a byte of weights or writes anything.
- Loading with ``infer_shapes=True`` runs ONNX shape inference on the parsed protobuf
  before it becomes an ``ir.Model`` when that protobuf holds little weight data
  (external data, or small embedded weights): one parse instead of onnx-ir's
  serialise-infer-parse-merge round trip. The model is marked so that the next
  :func:`onnxgrow.shapes.infer_shapes` call skips the work.
- Loading leaves out of the parse the ``value_info`` entries of initializers that carry
  only a type and shape (the tensor's own; onnx-ir writes one per initializer), and
  records them as annotated all the same (:func:`_drop_initializer_annotations`).
- Saving writes into a temporary folder beside the output, optionally runs a check on
  the written files, then commits them (:func:`onnxgrow.atomic.commit`): the data files,
  named ``<stem>.<8 random hex>.onnx.data`` so that they replace nothing, are renamed in
  first, the model last, and data files of earlier saves to the same output are deleted
  afterwards. A kill at any instant leaves the earlier or the new model whole under the
  output name; of two concurrent saves the last one wins whole. On a failure nothing is
  left behind; a failed write (disk full, no permission) is a GrowError. The input model
  and its data files are never written.
- A saved model annotates (``value_info``) the values its source annotated, with their
  new shapes, and no others (:func:`_source_annotations_only`).
- Weights listed as graph inputs (docs/design.md §10): before IR version 4 every initializer
  had to be listed as a graph input, and onnxruntime treats them as constants (it lists
  only the data inputs and refuses a feed for a weight). Loading such a model sets the
  listing aside, so growth sees constants, and saving lists every initializer again, new
  and grown ones included, so the file stays a valid model of its IR version
  (:func:`_weights_listed_as_inputs`). From IR version 4 on, a listed initializer is a
  default that a caller may override: it stays an input unless the caller asks with
  ``weights_as_constants=True`` (``--weights-as-constants``) to treat it as a constant;
  the listing is then set aside and written back the same way.
- Saving streams: weights that were not changed are copied from their data file to the
  new one by the kernel, never read into memory, so saving costs about what copying
  the files costs, in time and memory, whatever the size (:mod:`onnxgrow.data_files`).
- Weights can be split over several data files of at most ``max_shard_bytes`` each,
  named ``<stem>.<hex>-00001-of-00003.onnx.data`` (a larger tensor gets a file of its own).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxgrow import collector, data_files
from onnxgrow import map_types as map_types_
from onnxgrow.atomic import atomic_output, check_output_folder, commit, named_as, temporary_folder, writing
from onnxgrow.constants import RESHAPING_OPS, find_constant
from onnxgrow.errors import GrowError
from onnxgrow.graph import mark_holders
from onnxgrow.well_formed import check_well_formed

#: Models whose weights exceed this many bytes are saved with external data even
#: when the source embedded them (protobuf cannot hold more than 2 GiB).
LARGE_MODEL_BYTES = 256 * 1024 * 1024
#: Tensors smaller than this stay inside the .onnx file when saving external data.
INLINE_TENSOR_BYTES = 1024
#: Key in ``model.meta`` recording whether the loaded file had external data.
SOURCE_EXTERNAL_KEY = "onnxgrow.source_external_data"
#: Key in ``model.meta`` set when loading inferred the shapes (see the module docstring).
SHAPES_INFERRED_KEY = "onnxgrow.shapes_inferred"
#: Key in ``model.meta``: the names of the main graph's values that the loaded file annotated
#: (its ``value_info``), see :func:`_source_annotations_only`.
ANNOTATED_KEY = "onnxgrow.annotated_values"
#: Shape inference runs on the loaded protobuf when its embedded weights are at most this big;
#: above it, on a copy without the weights larger than :data:`INFER_KEEPS_VALUES_BYTES` (typed
#: graph inputs there: inference reads only small constants, shapes and axes).
INFER_ON_PROTO_BYTES = 16 * 1024 * 1024
#: Weights above this many bytes reach onnx's shape inference without their values, here and
#: in :func:`onnxgrow.shapes.infer_shapes` (onnx-ir's pass draws the line at 1000 bytes).
INFER_KEEPS_VALUES_BYTES = 1024
#: Key in ``model.meta``: the :class:`ListedWeights` of a model whose initializers listed as
#: graph inputs were set aside as constants when it was loaded.
LISTED_WEIGHTS_KEY = "onnxgrow.weights_listed_as_inputs"


@dataclass(frozen=True)
class ListedWeights:
    """How the loaded file listed its initializers as graph inputs: the names of the main
    graph's inputs in their order, and whether every initializer was among them."""

    order: tuple[str, ...]
    every: bool


def load_model(path: str | os.PathLike[str], *, infer_shapes: bool = False,
               weights_as_constants: bool = False) -> ir.Model:
    """Load an ONNX model for growth, keeping external weights lazy.

    ``infer_shapes`` annotates value shapes where that is cheap (see the module
    docstring). Initializers listed as graph inputs are constants before IR version 4,
    and from it on when ``weights_as_constants`` is given (:func:`set_listed_weights_aside`).
    Raises GrowError with one line naming the file when it is missing, empty, not an ONNX
    model, or when its external data is missing or truncated.
    The garbage collector is paused meanwhile (:func:`onnxgrow.collector.paused`).
    """
    with collector.paused():
        return _load(Path(path), infer_shapes, weights_as_constants)


def _load(p: Path, infer_shapes: bool, weights_as_constants: bool) -> ir.Model:
    if not p.exists():
        raise GrowError(f"{p}: no such file")
    if p.is_dir():
        raise GrowError(f"{p}: is a directory, not an ONNX model file")
    if p.stat().st_size == 0:
        raise GrowError(f"{p}: empty file, not an ONNX model")
    try:
        proto = onnx.load(p, load_external_data=False)
    except Exception as exc:  # protobuf raises many kinds on garbage
        raise GrowError(f"{p}: not a readable ONNX model ({_first_line(exc)})") from None
    form = check_well_formed(proto, p)
    try:
        annotated = frozenset(info.name for info in proto.graph.value_info)
        _drop_initializer_annotations(proto.graph)
        inferred = _infer_on_proto(proto) if infer_shapes else None
        map_types = map_types_.set_aside(inferred or proto)
        model = ir.serde.deserialize_model(inferred or proto)
        map_types_.remember(model, map_types)
    except Exception as exc:  # protobuf and onnx-ir raise many kinds on garbage
        raise GrowError(f"{p}: not a readable ONNX model ({_first_line(exc)})") from None
    ir.external_data.set_base_dir(model.graph, os.path.dirname(p))  # as ir.load does
    if len(model.graph.outputs) == 0 or not model.opset_imports:
        raise GrowError(f"{p}: not an ONNX model (no graph outputs or opset)")
    if not 3 <= model.ir_version <= onnx.IR_VERSION:
        raise GrowError(f"{p}: unsupported IR version {model.ir_version} (onnx {onnx.__version__} checks and "
                        f"writes 3 to {onnx.IR_VERSION})")
    if model.ir_version < 4:
        inputs = {v.name for v in model.graph.inputs}
        loose = next((name for name in model.graph.initializers if name not in inputs), None)
        if loose is not None:
            raise GrowError(f"{p}: not a valid IR version {model.ir_version} model: initializer {loose!r} "
                            "is not a graph input (required before IR version 4)")
    check_node_fields(model, p)
    if form.unsorted:
        _sort(model, p)
    mark_holders(model.graph)
    if model.ir_version < 4 or weights_as_constants:
        set_listed_weights_aside(model)
    undefined = next((v for v in (*model.graph.inputs, *model.graph.outputs)
                      if v.dtype == ir.DataType.UNDEFINED), None)
    if undefined is not None:
        raise GrowError(f"{p}: graph input or output {undefined.name!r} has an undefined element type")
    untyped = next((v for graph in model.graphs() for v in graph.initializers.values()
                    if v.const_value is not None and v.const_value.dtype == ir.DataType.UNDEFINED), None)
    if untyped is not None:
        raise GrowError(f"{p}: initializer {untyped.name!r} has an undefined element type")
    model.meta[SOURCE_EXTERNAL_KEY] = check_external_data(model, p)
    model.meta[ANNOTATED_KEY] = annotated
    if inferred is not None and not _shape_constant_chains(model):
        model.meta[SHAPES_INFERRED_KEY] = True
    return model


def _sort(model: ir.Model, model_path: Path) -> None:
    """Put the nodes of every graph in topological order, as onnxruntime does before running
    them (docs/design.md §10): growth, the check and the saved model then see them so."""
    try:
        model.graph.sort()
    except ValueError:
        raise GrowError(f"{model_path}: not a well-formed ONNX model: its nodes form a cycle") from None


def _shape_constant_chains(model: ir.Model) -> bool:
    """Give the constants that a chain reshapes at run time (:data:`onnxgrow.constants.RESHAPING_OPS`)
    the shape ONNX inference left out, and tell whether any was missing.

    ONNX inference does not follow a target shape through an ``Identity`` (paddle2onnx
    writes ``Reshape(Constant bias, Identity(Constant [1, -1, 1, 1]))``), so every value after
    such a bias lost its rank; with these shapes known, the next inference
    (:func:`onnxgrow.shapes.infer_shapes`) reaches them.
    """
    found = False
    for node in model.graph.all_nodes():
        if node.op_type not in RESHAPING_OPS or node.domain not in ("", "ai.onnx") or not node.outputs:
            continue
        out = node.outputs[0]
        if out.shape is not None:
            continue
        ref = find_constant(out)
        if ref is not None:
            array = ref.array()
            out.shape, out.type = ir.Shape(array.shape), ir.TensorType(ref.dtype)
            found = True
    return found


def set_listed_weights_aside(model: ir.Model) -> None:
    """Remove the initializers from the main graph's inputs, so that they are constants, and
    record the listing (:class:`ListedWeights`) for :func:`_weights_listed_as_inputs`."""
    graph = model.graph
    listed = [v for v in graph.inputs if v.is_initializer()]
    if not listed:
        return
    every = len(listed) == len(graph.initializers)
    model.meta[LISTED_WEIGHTS_KEY] = ListedWeights(tuple(v.name or "" for v in graph.inputs), every)
    data = [v for v in graph.inputs if not v.is_initializer()]
    graph.inputs.clear()
    graph.inputs.extend(data)


def check_node_fields(model: ir.Model, model_path: Path) -> None:
    """Fail when a string field is not text (protobuf hands over bytes for a string field that
    is not valid UTF-8): the model's producer, domain, metadata and opset domains; each
    graph's name and metadata; each node's name, op type, domain, attribute names and
    metadata; each value's name. Also fail when a standard op's attributes or input/output
    counts do not fit its ONNX schema."""
    opset = model.opset_imports.get("", None)
    _require_text(model_path, "the model's header", [
        model.producer_name, model.producer_version, model.domain, model.doc_string,
        *model.opset_imports, *_metadata(model)])
    _check_graph_fields(model.graph, opset, model_path)


def _check_graph_fields(graph: ir.Graph, opset: int | None, model_path: Path) -> None:
    """:func:`check_node_fields` for one graph and, as its nodes are met, their subgraphs."""
    _require_text(model_path, "a graph's name or metadata", [graph.name, graph.doc_string, *_metadata(graph)])
    values = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
    for index, node in enumerate(graph):
        _require_text(model_path, f"node {index} of a graph", [
            node.name, node.op_type, node.domain, node.doc_string, *node.attributes, *_metadata(node)])
        values += [v for v in (*node.inputs, *node.outputs) if v is not None]
        if node.domain in ("", "ai.onnx") and opset is not None:
            _check_against_schema(node, opset, model_path)
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                _check_graph_fields(attr.as_graph(), opset, model_path)
            elif attr.type == ir.AttributeType.GRAPHS:
                for subgraph in attr.as_graphs():
                    _check_graph_fields(subgraph, opset, model_path)
    _require_text(model_path, "a value name", [v.name for v in values])


def _metadata(owner: ir.Model | ir.Graph | ir.Node) -> list[object]:
    return [text for item in owner.metadata_props.items() for text in item]


def _require_text(model_path: Path, where: str, fields: list[object]) -> None:
    for field in fields:
        if field is not None and not isinstance(field, str):
            raise GrowError(f"{model_path}: {where} has a string that is not valid UTF-8 text ({field!r:.60})")


#: A formal input or output of an op schema that must be given.
_SINGLE = onnx.defs.OpSchema.FormalParameterOption.Single


@functools.lru_cache(maxsize=1024)
def _schema(op_type: str, opset: int) -> onnx.defs.OpSchema | None:
    """The ONNX schema of a standard op (None if unknown to onnx: onnxruntime will judge it)."""
    try:
        return onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return None


def _check_against_schema(node: ir.Node, opset: int, model_path: Path) -> None:
    """Attribute types and input/output counts of a standard op must fit its schema."""
    schema = _schema(node.op_type, opset)
    if schema is None:
        return
    label = f"{node.op_type} node {node.name!r}"
    for name, attr in node.attributes.items():
        declared = schema.attributes.get(name)
        if declared is None:
            continue
        wanted = int(declared.type.value)  # type: ignore[attr-defined]  # onnx's stub omits the pybind enum's value
        if attr.type.value != wanted:
            raise GrowError(f"{model_path}: attribute {name!r} of {label} is {attr.type.name}, "
                            f"its schema wants {ir.AttributeType(wanted).name}")
    for kind, count, low, high in (("inputs", len(node.inputs), schema.min_input, schema.max_input),
                                   ("outputs", len(node.outputs), schema.min_output, schema.max_output)):
        if not low <= count <= high:
            raise GrowError(f"{model_path}: {label} has {count} {kind}; its schema wants "
                            f"{low}" + ("" if high == low else f" to {high}"))
    for kind, values, formal in (("input", node.inputs, schema.inputs), ("output", node.outputs, schema.outputs)):
        for index, value in enumerate(values):
            param = formal[min(index, len(formal) - 1)] if formal else None
            if (value is None or not value.name) and param is not None and param.option == _SINGLE:
                raise GrowError(f"{model_path}: {label} leaves its {kind} {index} ({param.name}) unnamed; its "
                                "schema requires it")


def _drop_initializer_annotations(graph: onnx.GraphProto) -> None:
    """Remove the ``value_info`` entries of initializers that carry only a type and shape.

    An initializer's type and shape are its tensor's, which its value gets anyway; onnx-ir
    writes such an entry for every initializer, and parsing them was a fifth of loading a
    20,000-node chain. Entries that say more stay: metadata (torch's dynamo exporter puts
    each parameter's export record there), a doc string, or an element type other than
    the tensor's (an invalid model, left for the checks to report). The names stay
    recorded as annotated, so a save writes the entries again.
    """
    types = {tensor.name: tensor.data_type for tensor in graph.initializer}
    kept = [info for info in graph.value_info
            if info.name not in types or info.metadata_props or info.doc_string
            or info.type.tensor_type.elem_type != types[info.name]]
    if len(kept) < len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(kept)


def _infer_on_proto(proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """The proto with inferred shapes, or None when inference fails (onnx-ir's pass then runs
    later). Embedded weights that inference reads only for their type (above
    :data:`INFER_KEEPS_VALUES_BYTES` each) are not copied when they add up to more than
    :data:`INFER_ON_PROTO_BYTES`: inference runs on the graph without them
    (:func:`_without_large_weights`) and its value annotations are copied into ``proto``,
    when the graph has no subgraphs (whose annotations would have to be matched graph by
    graph: those models run the pass later). Otherwise (a chain of many small weights) the
    proto itself is inferred: the light copy would copy every node for nothing."""
    droppable = sum(size for t in proto.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL
                    and (size := t.ByteSize()) > INFER_KEEPS_VALUES_BYTES)
    try:
        if droppable <= INFER_ON_PROTO_BYTES:
            return infer_proto_shapes(proto)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for node in proto.graph.node for a in node.attribute):
            return None
        inferred = infer_proto_shapes(_without_large_weights(proto))
    except Exception:  # the model may still be loadable; growth then runs the pass itself
        return None
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(inferred.graph.value_info)
    return proto


def infer_proto_shapes(proto: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's shape inference as onnxgrow runs it everywhere: types checked, lenient, with data
    propagation (shapes computed from small constants)."""
    return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=False, data_prop=True)


def _without_large_weights(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` for shape inference: its nodes, functions and small weights; each
    weight above :data:`INFER_KEEPS_VALUES_BYTES` a typed graph input instead."""
    graph = proto.graph
    light = onnx.ModelProto(ir_version=proto.ir_version)
    light.opset_import.extend(proto.opset_import)
    light.functions.extend(proto.functions)
    kept = light.graph
    kept.name = graph.name
    kept.node.extend(graph.node)
    kept.input.extend(graph.input)
    kept.output.extend(graph.output)
    kept.value_info.extend(graph.value_info)
    kept.sparse_initializer.extend(graph.sparse_initializer)
    listed = {v.name for v in graph.input}
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.ByteSize() <= INFER_KEEPS_VALUES_BYTES:
            kept.initializer.append(tensor)
        elif tensor.name not in listed:
            kept.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims))
    return light


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def external_tensors(model: ir.Model) -> Iterator[tuple[str, ir.ExternalTensor]]:
    """Yield (initializer name, tensor) for every initializer stored as external data."""
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            yield name, tensor


def check_external_data(model: ir.Model, model_path: Path) -> bool:
    """Fail with the tensor's and file's names if external data is missing, short, of a
    recorded length other than the tensor's size, or outside the model's folder; return
    whether the model has external data at all.

    ONNX locations are relative to the model's folder; reading elsewhere would leak other
    files into outputs. A location must be relative without ``..``, and the file it names,
    symlinks followed, must lie in the model's folder, or, when the model file is itself a
    symlink, in the folder its target lies in: the Hugging Face hub cache, where
    ``snapshots/<rev>/model.onnx`` and ``model.onnx.data`` both link into ``blobs/``. Such
    a tensor is re-based onto its real file so that onnx-ir's own containment check holds.
    A data file with several hard links is refused (onnx-ir refuses to read it).
    """
    folders = _data_folders(model_path)
    sizes: dict[str, int] = {}
    for name, value, tensor in _external_values(model):
        location = Path(tensor.location)
        if location.is_absolute() or ".." in location.parts or str(tensor.location).startswith(("/", "\\")):
            raise GrowError(
                f"{model_path}: external data location {tensor.location} of tensor {name!r} "
                "is outside the model's folder; ONNX wants a path relative to it"
            )
        if tensor.length is not None and tensor.length != tensor.nbytes:
            raise GrowError(
                f"{model_path}: tensor {name!r} records {tensor.length} bytes of external data "
                f"but its shape and type need {tensor.nbytes}"
            )
        real = Path(os.path.realpath(tensor.path))
        if not any(_inside(real, folder) for folder in folders):
            raise GrowError(
                f"{model_path}: external data {tensor.location} of tensor {name!r} resolves "
                f"to {real!s}, outside the model's folder; nothing read (copy the data file "
                "beside the model)"
            )
        if not real.is_file():
            raise GrowError(
                f"{model_path}: external data file {tensor.location} for tensor "
                f"{name!r} is missing"
            )
        data_path = str(real)
        if data_path not in sizes:
            stat = real.stat()
            if stat.st_nlink > 1:
                raise GrowError(
                    f"{model_path}: external data file {tensor.location} of tensor {name!r} "
                    f"has {stat.st_nlink} hard links; onnx-ir refuses such files (copy it)"
                )
            sizes[data_path] = stat.st_size
        end = (tensor.offset or 0) + tensor.nbytes
        if end > sizes[data_path]:
            raise GrowError(
                f"{model_path}: external data file {tensor.location} is too short for "
                f"tensor {name!r} (needs bytes up to {end}, file has {sizes[data_path]})"
            )
        if not _inside(real, folders[0]):  # a hub cache blob: read it where it really is
            value.const_value = ir.ExternalTensor(
                real.name, tensor.offset, tensor.length, tensor.dtype, shape=tensor.shape,
                name=tensor.name, base_dir=str(real.parent))
    return bool(sizes)


def _data_folders(model_path: Path) -> list[Path]:
    """Where a model's data files may really lie: its folder, and the folder of the model
    file's own symlink target (see :func:`check_external_data`)."""
    folder = Path(os.path.realpath(model_path.parent))
    folders = [folder]
    if model_path.is_symlink():
        target_folder = Path(os.path.realpath(model_path)).parent
        if target_folder != folder:
            folders.append(target_folder)
    return folders


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _external_values(model: ir.Model) -> Iterator[tuple[str, ir.Value, ir.ExternalTensor]]:
    for graph in model.graphs():
        for name, value in graph.initializers.items():
            if isinstance(value.const_value, ir.ExternalTensor):
                yield name, value, value.const_value


def weight_bytes(model: ir.Model) -> int:
    """Total bytes of the graph's initializers, read from metadata only."""
    total = 0
    for value in model.graph.initializers.values():
        if value.const_value is not None:
            total += value.const_value.nbytes
    return total


def wants_external_data(model: ir.Model) -> bool:
    """Save externally when the source did, when a weight is external, or when the weights are large."""
    return (
        bool(model.meta.get(SOURCE_EXTERNAL_KEY))
        or any(True for _ in external_tensors(model))
        or weight_bytes(model) > LARGE_MODEL_BYTES
    )


def files_of(model_path: Path, model: ir.Model | None = None) -> list[Path]:
    """The model file and every external data file it references."""
    paths = [model_path.resolve()]
    if model is not None:
        for _, tensor in external_tensors(model):
            resolved = Path(tensor.path).resolve()
            if resolved not in paths:
                paths.append(resolved)
    return paths


def ensure_output_is_not_input(output: Path, inputs: list[Path]) -> None:
    """Refuse an output path that would overwrite an input model or its data (or shards)."""
    for p in inputs:
        if p.resolve() == output.resolve() or is_own_data_file(output, p):
            raise GrowError(
                f"{output}: refusing to overwrite the input {p}; choose another output with -o"
            )


def save_model(
    model: ir.Model,
    output: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    max_shard_bytes: int | None = None,
    check: Callable[[Path], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    companions: Mapping[Path, Callable[[Path], None]] | None = None,
) -> Path:
    """Write ``model`` to ``output`` atomically, with external data beside it when wanted.

    ``external_data=None`` decides by :func:`wants_external_data`; ``max_shard_bytes``
    (which implies external data) splits the weights over several files. ``check``
    receives the path of the fully written temporary model and may raise to abort: then
    nothing is written. ``progress(done, total)`` counts bytes of external data written.
    The data files get names of this save's own (:func:`versioned_data_stem`) and are
    committed with the model by :func:`onnxgrow.atomic.commit`; :func:`written_files` lists
    what the output holds afterwards.

    ``companions`` (path → writer of that file, e.g. the growth map) are written with the
    model: each writer fills a temporary file beside its path after the check, before the
    model is committed, so a companion that cannot be written leaves nothing written; they
    are renamed into place right after the model.
    """
    out = Path(output)
    check_output_folder(out, ".onnx")
    if max_shard_bytes is not None and max_shard_bytes <= 0:
        raise GrowError(f"the maximum shard size must be positive, got {max_shard_bytes} bytes")
    use_external = max_shard_bytes is not None or (
        wants_external_data(model) if external_data is None else external_data)
    with temporary_folder(out) as tmp:
        tmp_model = tmp / out.name
        with writing(out), _serializable(out), _weights_listed_as_inputs(model), _source_annotations_only(model):
            if use_external:
                _save_external(model, tmp_model, tmp / versioned_data_stem(out), max_shard_bytes, progress)
            else:
                _save_embedded(model, tmp_model)
        if check is not None:
            with named_as(out, tmp_model):
                check(tmp_model)
        written = sorted(p.name for p in tmp.iterdir() if p != tmp_model)
        with contextlib.ExitStack() as staged:
            for path, write in (companions or {}).items():
                write(staged.enter_context(atomic_output(path)))
            with writing(out):
                commit(tmp, written, out, stale=lambda path: is_own_data_file(out, path))
    return out


def versioned_data_stem(output: Path) -> str:
    """``grown.onnx`` → ``grown.<8 random hex digits>.onnx``: the name the data files of one
    save are derived from (``grown.1f2e3d4c.onnx.data``, or its shards), so that no save's
    data file replaces another's."""
    stem, ext = os.path.splitext(output.name)
    return f"{stem}.{secrets.token_hex(4)}{ext}"


def is_own_data_file(output: Path, path: Path) -> bool:
    """Whether ``path`` is a data file an onnxgrow save of ``output`` writes or wrote:
    ``<stem>.<8 hex>.onnx.data`` and its shards, or the unversioned names of earlier
    onnxgrow versions (:func:`onnxgrow.data_files.is_data_file_of`)."""
    if data_files.is_data_file_of(output, path):
        return True
    if path.parent.resolve() != output.parent.resolve():
        return False
    stem, ext = os.path.splitext(output.name)
    pattern = re.escape(stem) + r"\.[0-9a-f]{8}(?:-\d{5,}-of-\d{5,})?" + re.escape(ext) + r"\.data"
    return re.fullmatch(pattern, path.name) is not None


def written_files(output: Path) -> list[Path]:
    """The files a save of ``output`` consists of: the model, then its data files (after a
    save: exactly the ones it references, since the commit removed the others)."""
    data = sorted(p for p in output.parent.iterdir() if p.is_file() and is_own_data_file(output, p))
    return [output, *data]


@contextlib.contextmanager
def _source_annotations_only(model: ir.Model) -> Iterator[None]:
    """Within the block, the main graph's values annotate only what the loaded file did.

    Rule: a saved model carries ``value_info`` for the values its source carried it for
    (with the types and shapes growth gave them), and for no others. Left out: the shapes
    inference added for planning, and the entry onnx-ir writes for every initializer
    (its tensor already holds its type and shape). Graph inputs and outputs keep theirs.
    A model that was not loaded from a file (no record) keeps every annotation. The
    values get their types and shapes back afterwards.
    """
    annotated: frozenset[str] | None = model.meta.get(ANNOTATED_KEY)
    if annotated is None:
        yield
        return
    graph = model.graph
    boundary = {*graph.inputs, *graph.outputs}
    values = (*graph.initializers.values(), *(v for node in graph for v in node.outputs))
    hidden = [(v, v.type, v.shape) for v in values
              if v.name not in annotated and v not in boundary and (v.type is not None or v.shape is not None)]
    for value, _, _ in hidden:
        value.type, value.shape = None, None
    try:
        yield
    finally:
        for value, type_, shape in hidden:
            value.type, value.shape = type_, shape


@contextlib.contextmanager
def _weights_listed_as_inputs(model: ir.Model) -> Iterator[None]:
    """Within the block, the main graph's inputs list the weights the loaded file listed.

    Rule: the inputs come in the loaded file's order, each listed weight that still exists
    with its grown shape; when the file listed every initializer (required before IR
    version 4), the initializers added since (a widened layer's own copy of a shared bias,
    a deepened layer's weights) are listed after them. A model loaded without a listing
    set aside (:func:`set_listed_weights_aside`) is saved as it is.
    """
    listed: ListedWeights | None = model.meta.get(LISTED_WEIGHTS_KEY)
    if listed is None:
        yield
        return
    graph = model.graph
    data = list(graph.inputs)
    pending = {v.name: v for v in data}
    inputs: list[ir.Value] = []
    for name in listed.order:
        if name in pending:
            inputs.append(pending.pop(name))
        elif name in graph.initializers:
            inputs.append(graph.initializers[name])
    inputs += pending.values()
    if listed.every:
        named = set(listed.order)
        inputs += [v for name, v in graph.initializers.items() if name not in named]
    typed = [(v, v.type, v.shape) for v in inputs if v.const_value is not None]
    for value, _, _ in typed:  # a graph input needs its type and shape: the tensor's
        tensor = value.const_value
        assert tensor is not None
        value.type, value.shape = ir.TensorType(tensor.dtype), ir.Shape(tensor.shape.numpy())
    graph.inputs.clear()
    graph.inputs.extend(inputs)
    try:
        yield
    finally:
        graph.inputs.clear()
        graph.inputs.extend(data)
        for value, type_, shape in typed:
            value.type, value.shape = type_, shape


@contextlib.contextmanager
def _serializable(out: Path) -> Iterator[None]:
    """A model onnx-ir cannot serialize (a malformed attribute, say) is a GrowError, not a traceback."""
    try:
        yield
    except ir.serde.SerdeError as exc:
        cause: BaseException = exc
        while cause.__cause__ is not None:  # the innermost error names what is malformed
            cause = cause.__cause__
        raise GrowError(f"{out}: the model cannot be saved, it is not valid ONNX ({_first_line(cause)})") from None


def _save_external(
    model: ir.Model, path: Path, data_stem: Path, max_shard_bytes: int | None,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Every initializer over :data:`INLINE_TENSOR_BYTES` into data files named after
    ``data_stem`` (streamed, see :mod:`onnxgrow.data_files`), the smaller ones inside the
    model at ``path``; ``model`` is left as it was."""
    constants = [(v, t) for g in model.graphs() for v in g.initializers.values() if (t := v.const_value) is not None]
    outside = [(v, t) for v, t in constants if t.nbytes > INLINE_TENSOR_BYTES]
    inside = [(v, t) for v, t in constants if t.nbytes <= INLINE_TENSOR_BYTES and isinstance(t, ir.ExternalTensor)]
    tensors = [t for _, t in outside]
    if progress is not None:
        progress(0, sum(t.nbytes for t in tensors))
    written = data_files.write(tensors, data_stem, max_shard_bytes=max_shard_bytes, progress=progress)
    loaded = [in_memory(t) for _, t in inside]
    try:
        for (value, _), tensor in [*zip(outside, written), *zip(inside, loaded)]:
            value.const_value = tensor
        ir.save(model, path)
        map_types_.put_back(model, path)
    finally:
        for value, original in constants:
            value.const_value = original


def _save_embedded(model: ir.Model, path: Path) -> None:
    """Save with every tensor inside the .onnx file (loads any external weights into memory)."""
    for _, value, tensor in _external_values(model):
        value.const_value = in_memory(tensor)
    ir.save(model, path)
    map_types_.put_back(model, path)


def in_memory(tensor: ir.ExternalTensor) -> ir.Tensor:
    """A copy in memory of an external tensor, whose file stays mapped: arrays handed out
    earlier (an exported Keras or PyTorch model's weights) may still view that mapping, so
    closing it (as onnx-ir's own conversion does) would fail with a BufferError."""
    return ir.Tensor(tensor.numpy().copy(), name=tensor.name, dtype=tensor.dtype)

