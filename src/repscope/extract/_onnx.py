"""Adapter for ONNX graphs run with ONNX Runtime; intermediate tensors become extra outputs."""

from __future__ import annotations

import functools
import hashlib
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from repscope._array import is_torch
from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.extract._base import Adapter, Batch, PreparedChunk, RowSource
from repscope.extract._pooling import pool
from repscope.extract._text import TextBatcher
from repscope.extract._torch import is_raw_images

__all__ = ["OnnxAdapter", "is_onnx_model"]

#: Shorthand for the graph's own outputs.
OUTPUTS = "outputs"

_NP_OF_ONNX = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 9: np.bool_}


def is_onnx_model(model: Any) -> bool:
    """True for a path to an ``.onnx`` file, an ``onnx.ModelProto`` or an ORT session."""
    if isinstance(model, (str, Path)):
        return str(model).lower().endswith(".onnx")
    mod = type(model).__module__
    return (mod.startswith("onnx.") and type(model).__name__ == "ModelProto") or (
        mod.startswith("onnxruntime") and type(model).__name__ == "InferenceSession"
    )


class OnnxAdapter(Adapter):
    """An ONNX graph run with ONNX Runtime.

    Layer names are tensor names of the graph: its outputs and the outputs of its nodes
    (:meth:`list_layers`, in node order), plus the friendly names of ``layer_names`` (a zoo
    model's ``info.layer_names``, e.g. ``encoder.layer.2`` for ``onnx::Shape_422``), which
    this adapter resolves to their tensors; results keep the name that was asked for. Requested intermediate tensors are added to a
    **copy** of the graph as extra outputs (types from ONNX shape inference), saved in a
    temporary directory and run with ``onnxruntime``; the graph's own outputs stay as they are.
    ``"outputs"`` expands to the graph's own outputs and is the default.

    Inputs: with a ``tokenizer``, a list of str (fed as ``input_ids``/``attention_mask``/
    ``token_type_ids``, whichever the graph takes; rank-3 tensors are pooled as tokens with the
    attention mask). Without one, an array of shape (n, ...) (or an iterable of batches) fed to
    the graph's single input, cast to its dtype.

    Parameters
    ----------
    model : str, Path, onnx.ModelProto or onnxruntime.InferenceSession
        The graph (a session must have been created from a file).
    tokenizer : transformers tokenizer or tokenizers.Tokenizer, optional
        For text graphs.
    max_length : int, optional
        Truncation length for text.
    device : str, optional
        ``None``/``"cpu"``: CPUExecutionProvider; ``"cuda"``: CUDAExecutionProvider.
    model_id : str, optional
        Default the file name.
    preprocess : callable, optional
        Applied to each chunk of **uint8** inputs (raw images), e.g. a zoo model's
        ``preprocess``; float inputs are fed as they are.
    layer_names : mapping of str to str, optional
        Friendly layer name -> graph tensor name; each tensor must exist in the graph.
    """

    kind: str = "onnx"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        max_length: int | None = None,
        device: Any = None,
        model_id: str | None = None,
        preprocess: Callable[[Any], Any] | None = None,
        layer_names: Mapping[str, str] | None = None,
    ) -> None:
        import onnx

        self._path: Path | None = None
        self._proto: Any = None
        if isinstance(model, (str, Path)):
            self._path = Path(model)
            if not self._path.is_file():
                raise RepscopeValueError(f"ONNX model file {str(model)!r} does not exist.")
        elif type(model).__name__ == "InferenceSession":
            path = getattr(model, "_model_path", None)
            raw = getattr(model, "_model_bytes", None)
            if path:
                self._path = Path(path)
            elif raw:
                self._proto = onnx.load_from_string(raw)
            else:
                raise RepscopeTypeError(
                    "this onnxruntime.InferenceSession does not expose its model; pass the "
                    ".onnx path (or the onnx.ModelProto) instead."
                )
        elif isinstance(model, onnx.ModelProto):
            self._proto = model
        else:
            raise RepscopeTypeError(
                f"OnnxAdapter needs a .onnx path, an onnx.ModelProto or an InferenceSession; got "
                f"{type(model).__name__}."
            )
        graph = _graph_of_file(_file_key(self._path)) if self._path else _graph(self._proto)
        self._inputs, self._outputs, self._layers, graph_name = graph
        self.layer_names = _check_layer_names(layer_names, self._layers)
        self.preprocess = preprocess
        self.text = TextBatcher(tokenizer, max_length) if tokenizer is not None else None
        self.has_mask = tokenizer is not None
        if self.text is None and len(self._inputs) != 1:
            raise RepscopeValueError(
                f"the ONNX graph takes {len(self._inputs)} inputs {[n for n, _ in self._inputs]}; "
                "without a tokenizer repscope feeds one array to a graph with one input. Pass "
                "tokenizer=... for a text graph."
            )
        self.providers = _providers(device)
        self.model_id = model_id or (self._path.name if self._path else graph_name or "onnx")
        self._sessions: dict[tuple[str, ...], Any] = {}

    # ---------------------------------------------------------------- layer names
    def list_layers(self) -> list[str]:
        """The friendly names of ``layer_names``, then node output tensor names in graph order
        (constants excluded), then graph outputs."""
        tensors = set(self._layers)
        return [n for n in self.layer_names if n not in tensors] + list(self._layers)

    def tensor_name(self, layer: str) -> str:
        """The graph tensor a layer name stands for (the one place friendly names resolve)."""
        return self.layer_names.get(layer, layer)

    def shorthands(self) -> dict[str, list[str]]:
        return {**super().shorthands(), OUTPUTS: list(self._outputs)}

    def default_layers(self) -> list[str]:
        """The blocks when known (zoo models), else the graph outputs."""
        return self.block_layers() or list(self._outputs)

    # ---------------------------------------------------------------- sessions
    def _session(self, names: tuple[str, ...]) -> Any:
        extra = tuple(sorted(n for n in names if n not in self._outputs))
        if self._path is not None:
            key = (_file_key(self._path), extra, tuple(self.providers))
            sess = _SESSIONS.get(key)
            if sess is None:
                sess = self._make_session(extra)
                _SESSIONS[key] = sess
                while len(_SESSIONS) > _MAX_SESSIONS:
                    _SESSIONS.popitem(last=False)
            else:
                _SESSIONS.move_to_end(key)
            return sess
        sess = self._sessions.get(extra)
        if sess is None:
            sess = self._make_session(extra)
            self._sessions[extra] = sess
        return sess

    def _make_session(self, extra: tuple[str, ...]) -> Any:
        import onnx
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if not extra and self._path is not None:
            return ort.InferenceSession(str(self._path), opts, providers=self.providers)
        if self._path is not None:
            proto = onnx.load(str(self._path))  # with external data, if any
        else:
            proto = onnx.ModelProto()
            proto.CopyFrom(self._proto)
        if extra:
            try:
                inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
            except Exception:  # shape inference is best effort: untyped outputs also run
                inferred = []
            typed = {v.name: v for v in inferred}
            for name in extra:
                vi = onnx.ValueInfoProto()
                if name in typed:
                    vi.CopyFrom(typed[name])
                else:
                    vi.name = name
                proto.graph.output.append(vi)
        # The modified copy lives in a temporary directory only while the session is built
        # (ONNX Runtime keeps the model in memory); large models keep external data beside it.
        key = hashlib.sha256("\0".join(extra).encode()).hexdigest()[:16]
        with tempfile.TemporaryDirectory(prefix="repscope-onnx-") as tmp:
            out = Path(tmp) / f"model-{key}.onnx"
            large = proto.ByteSize() > 1_900_000_000
            onnx.save(proto, str(out), save_as_external_data=large, location=f"model-{key}.data")
            return ort.InferenceSession(str(out), opts, providers=self.providers)

    # ---------------------------------------------------------------- inputs
    def rows(self, inputs: Any) -> RowSource:
        if self.text is not None:
            return RowSource(inputs, batched=False)
        batched = not (is_torch(inputs) or isinstance(inputs, np.ndarray))
        return RowSource(inputs, batched=batched)

    def prepare(self, items: Any, batch_size: int) -> PreparedChunk:
        import torch

        if self.text is not None:
            encoded, order = self.text.batches(items, batch_size)
            want = dict(self._inputs)
            batches = []
            for enc in encoded:
                missing = [n for n in want if n not in enc]
                if missing:
                    raise RepscopeValueError(
                        f"the ONNX graph needs inputs {missing}, which the tokenizer does not "
                        f"make (it makes {sorted(enc)})."
                    )
                feed = {n: enc[n].astype(want[n], copy=False) for n in want}
                mask = torch.from_numpy(enc["attention_mask"]).bool()
                batches.append(Batch(feed, mask, int(mask.shape[0])))
            return PreparedChunk(batches, order)
        if self.preprocess is not None and is_raw_images(items):
            items = self.preprocess(items)
        name, dtype = self._inputs[0]
        arr = items.detach().cpu().numpy() if is_torch(items) else np.asarray(items)
        n = int(arr.shape[0])
        batches = [
            Batch({name: np.ascontiguousarray(arr[i : i + batch_size], dtype=dtype)}, None,
                  min(batch_size, n - i))
            for i in range(0, n, batch_size)
        ]
        return PreparedChunk(batches, None)

    def run(self, batch: Batch, poolings: Mapping[str, str]) -> dict[str, Any]:
        import torch

        tensors = tuple(dict.fromkeys(self.tensor_name(n) for n in poolings))
        outs = dict(zip(tensors, self._session(tensors).run(list(tensors), batch.inputs)))
        result: dict[str, Any] = {}
        for name in poolings:
            arr = np.asarray(outs[self.tensor_name(name)])
            if arr.ndim == 0 or arr.shape[0] != batch.size:
                raise RepscopeValueError(
                    f"ONNX tensor {name!r} has shape {arr.shape}, with no leading batch dimension "
                    f"of {batch.size}; repscope extracts per-sample activations. Choose a tensor "
                    "computed per sample."
                )
            result[name] = pool(torch.from_numpy(arr), poolings[name], batch.mask, layer=name)
        return result

    def describe(self) -> dict[str, Any]:
        return {
            "adapter": self.kind,
            "file": self._path.name if self._path else None,
            "max_length": self.text.max_length if self.text else None,
        }


#: Sessions of graphs loaded from files, keyed by (file, size, mtime), extra outputs, providers.
_SESSIONS: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_MAX_SESSIONS = 4

GraphInfo = tuple[list[tuple[str, Any]], list[str], list[str], str]


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _graph_of_file(key: tuple[str, int, int]) -> GraphInfo:
    import onnx

    return _graph(onnx.load(key[0], load_external_data=False))


def _graph(proto: Any) -> GraphInfo:
    """Graph inputs (name, numpy dtype), outputs, layer names (node outputs then outputs), name."""
    graph = proto.graph
    inits = {t.name for t in graph.initializer}
    inputs = [
        (i.name, _NP_OF_ONNX.get(i.type.tensor_type.elem_type, np.float32))
        for i in graph.input
        if i.name not in inits
    ]
    outputs = [o.name for o in graph.output]
    consts = {"Constant", "ConstantOfShape"}
    names = [o for n in graph.node if n.op_type not in consts for o in n.output if o]
    seen = set(names)
    return inputs, outputs, names + [o for o in outputs if o not in seen], str(graph.name)


def _check_layer_names(names: Mapping[str, str] | None, tensors: list[str]) -> dict[str, str]:
    """``names`` as a dict, each friendly name mapped to a tensor of the graph."""
    if not names:
        return {}
    known = set(tensors)
    missing = {k: v for k, v in names.items() if v not in known}
    if missing:
        raise RepscopeValueError(
            f"layer_names maps {sorted(missing)} to tensors the ONNX graph does not have "
            f"({sorted(missing.values())}); every friendly name must name a tensor of the graph."
        )
    return {str(k): str(v) for k, v in names.items()}


def _providers(device: Any) -> list[str]:
    import onnxruntime as ort

    if device is None or str(device) == "cpu":
        return ["CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RepscopeValueError(
                f"device {str(device)!r} needs onnxruntime's CUDAExecutionProvider, which this "
                f"installation lacks (it has {ort.get_available_providers()}). Install "
                "onnxruntime-gpu, or run on the CPU (device 'cpu'; CLI: --device cpu)."
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise RepscopeValueError(
        f"The 'device' parameter of extract (CLI: --device) must be None, 'cpu' or 'cuda' for an "
        f"ONNX model. Got {device!r} instead."
    )
