"""Loading and saving models on onnx-ir, lazily and atomically.

Rules:
- Loading parses the graph only; weights stored as external data stay memory-mapped
  until a rewrite touches them. Every external-data reference is checked against its
  file (exists, long enough) so a broken model fails here, not half-way through a save.
- Saving writes into a temporary folder beside the output, optionally runs a check on
  the written files, then renames them into place. On any failure nothing is left
  behind. The input model and its data files are never written.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx_ir as ir

from onnxgrow.errors import GrowError

#: Models whose weights exceed this many bytes are saved with external data even
#: when the source embedded them (protobuf cannot hold more than 2 GiB).
LARGE_MODEL_BYTES = 256 * 1024 * 1024
#: Tensors smaller than this stay inside the .onnx file when saving external data.
INLINE_TENSOR_BYTES = 1024
#: Key in ``model.meta`` recording whether the loaded file had external data.
SOURCE_EXTERNAL_KEY = "onnxgrow.source_external_data"


def load_model(path: str | os.PathLike[str]) -> ir.Model:
    """Load an ONNX model for growth, keeping external weights lazy.

    Raises GrowError with one line naming the file when it is missing, empty, not an
    ONNX model, or when its external data is missing or truncated.
    """
    p = Path(path)
    if not p.exists():
        raise GrowError(f"{p}: no such file")
    if p.is_dir():
        raise GrowError(f"{p}: is a directory, not an ONNX model file")
    if p.stat().st_size == 0:
        raise GrowError(f"{p}: empty file, not an ONNX model")
    try:
        model = ir.load(p)
    except Exception as exc:  # protobuf and onnx-ir raise many kinds on garbage
        raise GrowError(f"{p}: not a readable ONNX model ({_first_line(exc)})") from None
    if len(model.graph.outputs) == 0 or not model.opset_imports:
        raise GrowError(f"{p}: not an ONNX model (no graph outputs or opset)")
    check_external_data(model, p)
    model.meta[SOURCE_EXTERNAL_KEY] = any(True for _ in external_tensors(model))
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def external_tensors(model: ir.Model) -> Iterator[tuple[str, ir.ExternalTensor]]:
    """Yield (initializer name, tensor) for every initializer stored as external data."""
    for name, value in model.graph.initializers.items():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            yield name, tensor


def check_external_data(model: ir.Model, model_path: Path) -> None:
    """Fail with the tensor's and file's names if external data is missing or short."""
    sizes: dict[str, int] = {}
    for name, tensor in external_tensors(model):
        data_path = tensor.path
        if data_path not in sizes:
            if not os.path.isfile(data_path):
                raise GrowError(
                    f"{model_path}: external data file {tensor.location!s} for tensor "
                    f"{name!r} is missing"
                )
            sizes[data_path] = os.path.getsize(data_path)
        end = (tensor.offset or 0) + tensor.nbytes
        if end > sizes[data_path]:
            raise GrowError(
                f"{model_path}: external data file {tensor.location!s} is too short for "
                f"tensor {name!r} (needs bytes up to {end}, file has {sizes[data_path]})"
            )


def weight_bytes(model: ir.Model) -> int:
    """Total bytes of the graph's initializers, read from metadata only."""
    total = 0
    for value in model.graph.initializers.values():
        if value.const_value is not None:
            total += value.const_value.nbytes
    return total


def wants_external_data(model: ir.Model) -> bool:
    """Save externally when the source did, or when the weights are large."""
    return (
        bool(model.meta.get(SOURCE_EXTERNAL_KEY))
        or any(True for _ in external_tensors(model))
        or weight_bytes(model) > LARGE_MODEL_BYTES
    )


def data_file_name(output: Path) -> str:
    """The external data file written next to ``output``: ``<name>.data``."""
    return output.name + ".data"


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
    """Refuse an output path that would overwrite an input model or its data."""
    targets = {output.resolve(), (output.parent / data_file_name(output)).resolve()}
    for p in inputs:
        if p.resolve() in targets:
            raise GrowError(
                f"{output}: refusing to overwrite the input {p}; choose another output with -o"
            )


def save_model(
    model: ir.Model,
    output: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    check: Callable[[Path], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``model`` to ``output`` atomically, with external data beside it when wanted.

    ``external_data=None`` decides by :func:`wants_external_data`. ``check`` receives the
    path of the fully written temporary model and may raise to abort: then nothing is
    written. ``progress(done, total)`` is called per external tensor written.
    """
    out = Path(output)
    _check_output_folder(out, ".onnx")
    use_external = wants_external_data(model) if external_data is None else external_data
    data_name = data_file_name(out)
    with _temporary_folder(out) as tmp:
        tmp_model = tmp / out.name
        callback = None
        if progress is not None:
            written = 0

            def callback(_tensor: ir.TensorProtocol, info: ir.external_data.CallbackInfo) -> None:
                nonlocal written
                written += 1
                progress(written, info.total)

        if use_external:
            ir.save(
                model,
                tmp_model,
                external_data=data_name,
                size_threshold_bytes=INLINE_TENSOR_BYTES,
                callback=callback,
            )
        else:
            _save_embedded(model, tmp_model)
        if check is not None:
            check(tmp_model)
        tmp_data = tmp / data_name
        if tmp_data.exists():
            os.replace(tmp_data, out.parent / data_name)
        os.replace(tmp_model, out)
    return out


def _save_embedded(model: ir.Model, path: Path) -> None:
    """Save with every tensor inside the .onnx file (loads any external weights into memory)."""
    if any(True for _ in external_tensors(model)):
        ir.external_data.load_to_model(model)
    ir.save(model, path)


def _check_output_folder(out: Path, suffix: str) -> None:
    if out.exists() and out.is_dir():
        raise GrowError(f"{out}: is a directory; give a file name ending in {suffix}")
    if not out.parent.exists():
        raise GrowError(f"{out.parent}: output folder does not exist")


@contextlib.contextmanager
def atomic_output(output: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``output`` at; renamed into place when the block succeeds.

    For files other than ONNX models (exported weights, modules). On any failure nothing
    is left behind.
    """
    out = Path(output)
    _check_output_folder(out, out.suffix or "a suffix")
    with _temporary_folder(out) as tmp:
        path = tmp / out.name
        yield path
        os.replace(path, out)


@contextlib.contextmanager
def _temporary_folder(out: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``out``, removed whatever happens."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
