"""The ``transformers`` side of ``--to hf``: the model class a config names, the weights it
saves, and the written folder loaded back with ``from_pretrained`` and run on ONNX feeds.

Imports PyTorch and ``transformers`` (the ``hf`` extra); :func:`import_transformers` says
what to install when they are missing.

Running a loaded model on the check's feeds (:func:`hf_runner`):

- every ONNX input is passed as the keyword argument of the same name of the model's
  ``forward`` (``input_ids``, ``attention_mask``, ``position_ids``, ``token_type_ids``,
  ``pixel_values``); the inputs ``past_key_values.N.key`` / ``.value`` of an optimum
  export with past fill a ``DynamicCache``, layer by layer, so that the past is compared
  too (the check's random past, and an attention mask over the past and the new ids:
  :func:`model_inputs`);
- the outputs are matched by name (``logits``, ``last_hidden_state``, and the cache's
  ``present.N.key`` / ``.value``), and otherwise by position among the model's outputs (the
  dynamo exporter names them after the nodes that made them: ``linear_14``).
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onnxgrow.errors import GrowError

if TYPE_CHECKING:
    from onnxgrow.export.hf_folder import SavedLayout
    from onnxgrow.verification import Runner

_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)\Z")
_PRESENT = "present.{layer}.{kind}"


def import_transformers() -> Any:
    """``transformers`` (with PyTorch), or a GrowError saying how to install it."""
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError:
        raise GrowError("--to hf needs transformers and PyTorch to check the folder it writes: "
                        "pip install 'onnxgrow[hf]'") from None
    return transformers


def model_class(config: Mapping[str, Any]) -> Any:
    """The ``transformers`` class the config's ``architectures`` names (``LlamaForCausalLM``)."""
    transformers = import_transformers()
    names = config.get("architectures")
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise GrowError("the config has no \"architectures\" entry naming the model class "
                        "(such as \"LlamaForCausalLM\"); add it to config.json")
    found = getattr(transformers, names[0], None)
    if found is None or not hasattr(found, "from_pretrained"):
        raise GrowError(f"the config's architecture {names[0]!r} is not a model class of transformers "
                        f"{transformers.__version__}")
    return found


def config_object(config: Mapping[str, Any]) -> Any:
    """The ``transformers`` config object of a config.json's contents."""
    transformers = import_transformers()
    model_type = config.get("model_type")
    try:
        return transformers.AutoConfig.for_model(**dict(config))
    except (ValueError, TypeError, KeyError) as exc:
        raise GrowError(f"transformers cannot read a config of model_type {model_type!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a validator of the config class refused the sizes
        cause = str(exc.__cause__ or exc).strip().splitlines()[-1].strip().rstrip(".")  # the hub wraps the cause
        raise GrowError(f"transformers {transformers.__version__} refuses the new config.json ({cause}): its "
                        f"{model_type} config cannot describe this model; export --to torch or --to state-dict "
                        "instead") from None


def saved_weights(config: Mapping[str, Any]) -> SavedLayout:
    """What a model built from ``config`` saves, built on the meta device (no memory, no
    initialisation): the shapes of the weights ``save_pretrained`` writes, under the names it
    writes them with, the buffers it does not save (``rotary_emb.inv_freq``: computed from
    the config), and the module names it saves under other names (:func:`saved_names`)."""
    import torch

    from onnxgrow.export.hf_folder import SavedLayout

    cls = model_class(config)
    with torch.device("meta"), _quiet():
        model = cls(config_object(config))
    tensors = model.state_dict()
    renamed = saved_names(model, tensors)
    shapes = {renamed.get(name, name): tuple(tensor.shape) for name, tensor in tensors.items()}
    buffers = {name for name, _ in model.named_buffers() if name not in tensors}
    return SavedLayout(shapes, buffers, renamed)


def saved_names(model: Any, tensors: Mapping[str, Any]) -> dict[str, str]:
    """Module name → the name ``save_pretrained`` writes it under, where they differ:
    transformers 5 loads the names of older checkpoints into renamed modules and writes them
    back under the old names (its ``revert_weight_conversion``), so that 4.x loads them too.
    Only one-to-one renamings are followed (each tensor is found again by identity); a
    conversion that splits or fuses tensors leaves the module names. transformers 4 saves
    the module names."""
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:
        return {}
    owners: dict[int, list[str]] = {}
    for name, tensor in tensors.items():
        owners.setdefault(id(tensor), []).append(name)
    with _quiet():
        reverted = revert_weight_conversion(model, dict(tensors))
    renamed = {}
    for saved, tensor in reverted.items():
        names = owners.get(id(tensor), [])
        if len(names) == 1 and names[0] != saved:
            renamed[names[0]] = saved
    return renamed


def model_inputs(config: Mapping[str, Any]) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """What the check's random feeds become for a model of ``config``:

    - every ``*attention_mask`` a padding mask: in each row, as many ones as the random row
      holds (at least one), then zeros; with a past (``past_key_values.N.key``), as long as
      the past and the new ids together. A row that attends to nothing (or a query that
      does, behind left padding in a causal model) is one a framework and its exported
      graph compute differently: not an input either is defined for;
    - ``pixel_values`` of the config's ``num_channels`` × ``image_size`` × ``image_size``
      (seeded normal values), where the graph leaves those dimensions open.
    """
    image = config.get("image_size")
    channels = config.get("num_channels")

    def convert(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        found = dict(feeds)
        past = next((a.shape[-2] for n, a in feeds.items() if _PAST.match(n) and a.ndim == 4), None)
        ids = feeds.get("input_ids")
        for name, array in feeds.items():
            if name.endswith("attention_mask") and array.ndim == 2 and array.dtype.kind in "iub":
                length = past + ids.shape[1] if past is not None and ids is not None and ids.ndim == 2 \
                    else array.shape[1]
                ones = np.maximum((array != 0).sum(axis=1, keepdims=True), 1)
                found[name] = (np.arange(length)[None, :] < ones).astype(array.dtype)
            elif name == "pixel_values" and array.ndim == 4 and isinstance(image, int) and isinstance(channels, int):
                shape = (array.shape[0], channels, image, image)
                if array.shape != shape:
                    found[name] = np.random.default_rng(0).standard_normal(shape).astype(array.dtype)
        return found

    return convert


def _as_tensor(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def _cache(model: Any, feeds: Mapping[str, np.ndarray]) -> Any:
    """A ``DynamicCache`` holding the past keys and values the feeds give, layer by layer."""
    from transformers import DynamicCache

    layers: dict[int, dict[str, np.ndarray]] = {}
    for name, array in feeds.items():
        match = _PAST.match(name)
        if match:
            layers.setdefault(int(match.group(1)), {})[match.group(2)] = array
    cache = DynamicCache()
    for layer in sorted(layers):
        pair = layers[layer]
        if set(pair) != {"key", "value"}:
            raise GrowError(f"the past of layer {layer} has a key or a value input but not both")
        cache.update(_as_tensor(pair["key"]), _as_tensor(pair["value"]), layer)
    return cache


def _outputs(result: Any) -> list[tuple[str, Any]]:
    """The model's outputs in order, by name; a cache as ``present.N.key`` / ``.value``."""
    found: list[tuple[str, Any]] = []
    for name, value in result.items():
        layers = getattr(value, "layers", None)
        if layers is not None:
            for k, layer in enumerate(layers):
                found += [(_PRESENT.format(layer=k, kind="key"), layer.keys),
                          (_PRESENT.format(layer=k, kind="value"), layer.values)]
        elif hasattr(value, "detach"):
            found.append((name, value))
    return found


def run_model(model: Any, feeds: Mapping[str, np.ndarray], output_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Run a ``transformers`` model on ONNX feeds; its outputs under the ONNX output names
    (module docstring)."""
    import torch

    parameters = inspect.signature(model.forward).parameters
    kwargs: dict[str, Any] = {}
    for name, array in feeds.items():
        if _PAST.match(name):
            continue
        if name not in parameters:
            raise GrowError(f"the model input {name!r} is not an argument of {type(model).__name__}.forward")
        kwargs[name] = _as_tensor(array)
    if any(_PAST.match(name) for name in feeds):
        # transformers 5 calls the argument ``cache`` (``past_key_values`` before)
        kwargs["cache" if "cache" in parameters else "past_key_values"] = _cache(model, feeds)
        kwargs["use_cache"] = True
    with torch.no_grad():
        result = model(**kwargs)
    produced = _outputs(result)
    by_name = dict(produced)
    outputs: dict[str, np.ndarray] = {}
    for index, name in enumerate(output_names):
        if name in by_name:
            value = by_name[name]
        elif index < len(produced):
            value = produced[index][1]
        else:
            raise GrowError(f"{type(model).__name__} has no output for the model output {name!r} "
                            f"(it gives {', '.join(n for n, _ in produced)})")
        outputs[name] = value.detach().float().numpy() if value.is_floating_point() else value.numpy()
    return outputs


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars or warnings from ``transformers`` (the loading info says what matters)."""
    logging = import_transformers().utils.logging
    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_folder(path: Path, config: Mapping[str, Any]) -> Any:
    """``from_pretrained(path)`` of the config's model class; a GrowError listing the
    missing, unexpected or mismatched keys when it reports any."""
    cls = model_class(config)
    with _quiet():
        model, info = cls.from_pretrained(str(path), output_loading_info=True)
    problems = [f"{what} {', '.join(map(str, keys))}" for what, keys in
                (("missing keys", info.get("missing_keys")), ("unexpected keys", info.get("unexpected_keys")),
                 ("mismatched keys", info.get("mismatched_keys")), ("errors", info.get("error_msgs"))) if keys]
    if problems:
        raise GrowError(f"{cls.__name__}.from_pretrained does not load the written folder cleanly: "
                        + "; ".join(problems))
    return model.eval()


def hf_runner(path: Path, config: Mapping[str, Any], output_names: Sequence[str]) -> Runner:
    """The folder at ``path`` loaded with ``from_pretrained``, as a runner of ONNX feeds."""
    model = load_folder(path, config)
    return lambda feeds: run_model(model, feeds, output_names)
