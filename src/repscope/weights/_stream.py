"""Merges and task-vector diagnostics streamed over safetensors checkpoints, tensor by tensor.

Only the headers are read up front; then, for each key, that tensor of every input is read from
disk (plain reads into a fresh buffer, no memory map kept), merged with the registered per-tensor
function (``weights._merge``), written to the output file and dropped. Peak memory is about one
tensor per input plus the output tensor, whatever the checkpoint size.

The output is a safetensors checkpoint as Hugging Face writes it: ``model.safetensors``, or
shards ``model-00001-of-0000N.safetensors`` with ``model.safetensors.index.json`` when larger
than ``max_shard_bytes``; the base's (or the first input's) ``config.json``,
``generation_config.json`` and tokenizer files are copied next to it, and
``repscope_merge.json`` records the method, its parameters and the inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError

if TYPE_CHECKING:
    import torch

    from repscope.weights._state import LazyStateDict
    from repscope.weights._taskvec import TaskVectorResult

__all__ = ["diagnose_files", "merge_files"]

_COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
           "special_tokens_map.json", "vocab.json", "merges.txt", "tokenizer.model")


def _check_headers(ref: LazyStateDict, other: LazyStateDict) -> None:
    """Same keys, shapes and dtypes, from the headers (finiteness is checked per tensor as the
    merge reads it, not in an extra pass)."""
    from repscope.weights._state import check_compatible

    check_compatible(ref, other, names=(ref.name, other.name), finite=False)


def _finite(t: torch.Tensor, key: str, who: str) -> None:
    import torch

    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        raise RepscopeValueError(
            f"{who} has non-finite values in {key!r} ({n_nan} NaN, "
            f"{int((~torch.isfinite(t)).sum()) - n_nan} inf); expected finite weights.")


def _open_inputs(inputs: Any, base: Any) -> tuple[list[LazyStateDict],
                                                  LazyStateDict | None]:
    if isinstance(inputs, (str, os.PathLike)) or not isinstance(inputs, Sequence):
        raise RepscopeTypeError(
            f"inputs: expected a list of safetensors files or folders, got "
            f"{type(inputs).__name__}.")
    from repscope.weights._state import LazyStateDict

    readers = [LazyStateDict.open(p, name=f"inputs[{i}]") for i, p in enumerate(inputs)]
    b = LazyStateDict.open(base, name="base") if base is not None else None
    ref = b if b is not None else readers[0]
    for r in readers:
        if r is not ref:
            _check_headers(ref, r)
    return readers, b


def _shards(keys: list[str], sizes: Mapping[str, int], max_bytes: int) -> list[list[str]]:
    out: list[list[str]] = [[]]
    total = 0
    for k in keys:
        if out[-1] and total + sizes[k] > max_bytes:
            out.append([])
            total = 0
        out[-1].append(k)
        total += sizes[k]
    return out


class _ShardWriter:
    """Writes one safetensors file whose header is known up front, tensor by tensor."""

    def __init__(self, path: Path, entries: list[tuple[str, str, tuple[int, ...], int]]) -> None:
        from repscope.store._safetensors import DTYPES

        header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
        pos = 0
        for key, dtype, shape, nbytes in entries:
            header[key] = {"dtype": DTYPES[dtype][0], "shape": list(shape),
                           "data_offsets": [pos, pos + nbytes]}
            pos += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
        raw += b" " * (-len(raw) % 8)
        self.path = path
        self.tmp = path.with_name(path.name + ".partial")
        self.f = open(self.tmp, "wb")  # noqa: SIM115 - closed in finish()
        self.f.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, t: torch.Tensor) -> None:
        import torch

        t = t.contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        arr = t.numpy()
        if arr.nbytes:
            self.f.write(np.ascontiguousarray(arr).reshape(-1).data.cast("B"))

    def finish(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.f.close()
        self.tmp.unlink(missing_ok=True)


class _LazyInputs(list):
    """One key of every input, each read (and checked finite) when first indexed, so a merge
    function that turns entry ``i`` into its delta before touching ``i + 1`` holds one input at
    a time."""

    def __init__(self, readers: list[LazyStateDict], key: str) -> None:
        super().__init__([None] * len(readers))
        self._readers = readers
        self._key = key

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        value = super().__getitem__(i)
        if value is None:
            r = self._readers[i]
            value = r.read(self._key)
            _finite(value, self._key, r.name)
            super().__setitem__(i, value)
        return value

    def __iter__(self) -> Iterator[Any]:
        return (self[i] for i in range(len(self)))


def merge_files(method: str, inputs: Sequence[str | os.PathLike[str]],
                out_dir: str | os.PathLike[str], *, base: str | os.PathLike[str] | None = None,
                progress: bool = True, max_shard_bytes: int = 5 * 10**9,
                **params: Any) -> Path:
    """Merge safetensors checkpoints tensor by tensor into ``out_dir``.

    Parameters
    ----------
    method : str
        A registered merge method (``weights._merge.MERGE_METHODS``).
    inputs : sequence of path
        The models: ``.safetensors`` files or folders of them (same keys, shapes, dtypes).
    out_dir : path
        Created if missing; the checkpoint, the copied config and ``repscope_merge.json`` go
        there (existing files of the same names are replaced).
    base : path or None
        The base checkpoint (methods that need one).
    progress : bool, default=True
        A progress bar over the tensors.
    max_shard_bytes : int, default=5e9
        Shard the output above this size (with an index json, as Hugging Face).
    **params
        The method's parameters, as :func:`~repscope.weights._merge.merge_state_dicts`. Fisher
        estimates (``fishers``) may be paths, read lazily.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    RepscopeValueError
        Different keys or shapes, a NaN/inf weight (named by tensor and input), bad parameters.
    RepscopeTypeError
        Different dtypes.
    """
    from repscope._progress import progress_for
    from repscope.weights._merge import merge_tensor, prepare_params
    from repscope.weights._state import as_state_dict

    readers, b = _open_inputs(inputs, base)
    if "fishers" in params and params["fishers"] is not None:
        params = {**params, "fishers": [as_state_dict(f, name=f"fishers[{i}]")
                                        for i, f in enumerate(params["fishers"])]}
    name, full = prepare_params(method, len(readers), b is not None, params)
    ref = b if b is not None else readers[0]
    keys = list(ref)
    sizes = {k: ref.nbytes(k) for k in keys}
    shards = _shards(keys, sizes, int(max_shard_bytes))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = len(shards)
    files = (["model.safetensors"] if n == 1 else
             [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)])
    weight_map: dict[str, str] = {}
    with progress_for(progress, f"merging ({name})", len(keys)) as advance:
        for fname, shard in zip(files, shards):
            entries = [(k, ref.specs[k][1].dtype, ref.specs[k][1].shape, sizes[k]) for k in shard]
            writer = _ShardWriter(out / fname, entries)
            try:
                for k in shard:
                    tensors = _LazyInputs(readers, k)
                    bt = b.read(k) if b is not None else None
                    if bt is not None:
                        _finite(bt, k, "base")
                    merged = merge_tensor(name, k, tensors, bt, full)
                    del tensors, bt
                    writer.write(merged)
                    del merged
                    weight_map[k] = fname
                    advance(1)
            except BaseException:
                writer.abort()
                raise
            writer.finish()
    if n > 1:
        index = {"metadata": {"total_size": int(sum(sizes.values()))}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    for stale in ([out / "model.safetensors.index.json"] if n == 1 else [out / "model.safetensors"]):
        stale.unlink(missing_ok=True)
    src = ref.folder
    for fname in _COPIED:
        if (src / fname).is_file() and (src / fname).resolve() != (out / fname).resolve():
            shutil.copyfile(src / fname, out / fname)
    shown = {k: (v if not isinstance(v, list) or all(isinstance(x, (int, float)) for x in v)
                 else f"{len(v)} state dicts") for k, v in full.items()}
    record = {"method": name, "params": shown,
              "inputs": [str(Path(p)) for p in inputs],
              "base": None if base is None else str(Path(base)), "files": files}
    (out / "repscope_merge.json").write_text(json.dumps(record, indent=2, default=str))
    return out


def _iter_deltas(readers: list[LazyStateDict], b: LazyStateDict,
                 keys: list[str]) -> Iterator[list[torch.Tensor]]:
    import torch

    for k in keys:
        bt = b.read(k)
        _finite(bt, k, "base")
        base64 = bt.to(torch.float64)
        deltas = []
        for r in readers:
            t = r.read(k)
            _finite(t, k, r.name)
            deltas.append(t.to(torch.float64) - base64)
        yield deltas


def diagnose_files(inputs: Sequence[str | os.PathLike[str]], base: str | os.PathLike[str], *,
                   names: Sequence[str] | None = None, progress: bool = True) -> TaskVectorResult:
    """Task-vector cosines, sign-conflict rate and norms of safetensors fine-tunes of ``base``,
    streamed tensor by tensor (as ``weights._taskvec.diagnose_task_vectors``, same numbers).

    Parameters
    ----------
    inputs : sequence of path
        The fine-tuned checkpoints (at least 2).
    base : path
    names : sequence of str or None
        Names of the inputs (default: their file or folder names).
    progress : bool, default=True

    Returns
    -------
    TaskVectorResult
    """
    import torch

    from repscope._progress import progress_for
    from repscope.weights._taskvec import (
        TaskVectorResult,
        cosines_from_gram,
        gram_update,
        sign_update,
    )

    readers, b = _open_inputs(inputs, base)
    assert b is not None
    if len(readers) < 2:
        raise RepscopeValueError(f"inputs: expected at least 2 fine-tunes, got {len(readers)}.")
    labels = list(names) if names is not None else [Path(p).name for p in inputs]
    if len(labels) != len(readers):
        raise RepscopeValueError(
            f"names: expected one per input ({len(readers)}), got {len(labels)}.")
    from repscope.store._safetensors import DTYPES

    keys = [k for k in b.specs
            if np.issubdtype(DTYPES[b.specs[k][1].dtype][1], np.floating)
            or b.specs[k][1].dtype == "bfloat16"]
    n = len(readers)
    gram = np.zeros((n, n))
    counts = np.zeros(2, dtype=np.int64)
    with progress_for(progress, "task-vector diagnostics", len(keys)) as advance, \
            torch.no_grad():
        for deltas in _iter_deltas(readers, b, keys):
            gram_update(gram, deltas)
            sign_update(counts, deltas)
            advance(1)
    rate = float(counts[0] / counts[1]) if counts[1] else float("nan")
    return TaskVectorResult(tuple(labels), cosines_from_gram(gram), rate,
                            np.sqrt(np.clip(np.diag(gram), 0, None)))
