"""``repscope sae train|eval|list``: sparse autoencoders on features from disk.

``train`` fits one SAE (or a sweep over k in one pass over the data) on a layer of a ``.npy``,
``.safetensors`` or FeatureStore, holding out the last samples for evaluation; ``eval`` scores
a saved SAE on features (and, given a language model, the LM loss it recovers); ``list`` shows
the registered architectures. Every SAE trained or evaluated becomes one ``sae`` record.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np

from repscope.cli._common import (
    check_exists,
    db_option,
    echo_json,
    json_option,
    print_table,
    settings,
)

_STORE_SAMPLES = 4096  # samples per read from a dense store layer
_STORE_RAGGED_SAMPLES = 64  # samples (paragraphs) per read from a token layer
_TEXT_CHARS = 400  # text kept per example in a record


# ---------------------------------------------------------------------------- features


class _Features:
    """One layer of a ``.npy``, ``.safetensors`` or FeatureStore: sizes, reads, descriptions."""

    def __init__(self, path: Path, layer: str | None, *, skip_first: bool = False) -> None:
        from repscope.exceptions import RepscopeValueError

        self.path = path
        self.skip_first = skip_first
        self.array: np.ndarray | None = None
        self.store: Any = None
        self.ragged = False
        if path.is_dir():
            from repscope.store import FeatureStore

            self.store = FeatureStore.open(path)
            self.model = self.store.model_id or path.name
            layers = list(self.store.layers)
            if not layers:
                raise RepscopeValueError(f"the FeatureStore at {path} holds no layers.")
            self.layer = layer if layer is not None else layers[-1]
            info = self.store.layer_info(self.layer)  # unknown layers raise with the known ones
            if len(info.shape_tail) != 1:
                raise RepscopeValueError(
                    f"layer {self.layer!r} of {path} holds samples of shape {info.shape_tail}; "
                    "an SAE needs one vector per sample or token. Extract it with pooling "
                    "(avg, mean) or as tokens."
                )
            self.d = int(info.shape_tail[0])
            self.n = int(info.n_samples)
            self.ragged = bool(info.ragged)
        else:
            self.model = path.stem
            self.layer, arr = _read_array(path, layer)
            if arr.ndim != 2:
                raise RepscopeValueError(
                    f"features in {path} [{self.layer}] must be 2-D (n_vectors, d); got shape "
                    f"{arr.shape}."
                )
            if arr.dtype.kind not in "fiu":
                raise RepscopeValueError(
                    f"features in {path} [{self.layer}] must be numeric; got dtype {arr.dtype}."
                )
            self.array = arr
            self.n, self.d = int(arr.shape[0]), int(arr.shape[1])
        if self.n < 1:
            raise RepscopeValueError(f"features in {path} [{self.layer}] hold no samples.")
        if skip_first and not self.ragged:
            raise RepscopeValueError(
                f"--skip-first drops the first token of each sample, but layer {self.layer!r} "
                f"of {path} is not a token layer (a FeatureStore layer extracted with tokens)."
            )
        self._meta: dict[str, np.ndarray] | None = None

    def part(self, start: int, stop: int) -> Any:
        """Samples ``start:stop`` as something the trainer and the metrics read."""
        if self.array is not None:
            return self.array[start:stop]
        return _StorePart(self, start, stop)

    def n_vectors(self) -> int:
        """Vectors in all samples (tokens for a token layer; one pass with --skip-first)."""
        if self.skip_first:
            return _n_vectors(self.part(0, self.n))
        if self.store is not None and self.ragged:
            return int(self.store.layer_info(self.layer).n_tokens or 0)
        return self.n

    def metadata(self) -> dict[str, np.ndarray]:
        if self._meta is None:
            cols = self.store.metadata_columns if self.store is not None else []
            wanted = [c for c in ("text", "id", "tokens") if c in cols]
            self._meta = self.store.metadata(wanted) if wanted else {}
        return self._meta


class _StorePart:
    """Samples ``start:stop`` of a store layer: a re-iterable of (vectors, d) batches (without
    each sample's first token under ``skip_first``)."""

    def __init__(self, feats: _Features, start: int, stop: int) -> None:
        self.feats, self.start, self.stop = feats, start, stop
        self._offsets: np.ndarray | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        f = self.feats
        rows = _STORE_RAGGED_SAMPLES if f.ragged else _STORE_SAMPLES
        for batch in f.store.iter_batches(f.layer, rows, start=self.start, stop=self.stop):
            values = np.asarray(batch.values if f.ragged else batch).reshape(-1, f.d)
            if f.skip_first:
                offsets = np.asarray(batch.offsets)
                keep = np.ones(values.shape[0], dtype=bool)
                keep[offsets[:-1][np.diff(offsets) > 0]] = False
                values = values[keep]
            yield values

    def offsets(self) -> np.ndarray:
        """Token offsets of the part's samples (n_samples + 1,) (one pass for a token layer)."""
        if self._offsets is None:
            n = self.stop - self.start
            if not self.feats.ragged:
                self._offsets = np.arange(n + 1, dtype=np.int64)
            else:
                f = self.feats
                lengths = np.concatenate(
                    [
                        np.diff(np.asarray(b.offsets))
                        for b in f.store.iter_batches(
                            f.layer, _STORE_RAGGED_SAMPLES, start=self.start, stop=self.stop
                        )
                    ]
                )
                if f.skip_first:
                    lengths = np.maximum(lengths - 1, 0)
                self._offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return self._offsets


def _read_array(path: Path, layer: str | None) -> tuple[str, np.ndarray]:
    from repscope.exceptions import CorruptStoreError, RepscopeValueError, UnknownNameError

    suffix = path.suffix.lower()
    if suffix == ".npy":
        if layer is not None and layer != path.stem:
            raise UnknownNameError(
                f"unknown layer {layer!r} in {path}: a .npy file holds one layer, {path.stem!r}.",
                name=layer,
                known=(path.stem,),
            )
        try:
            return path.stem, np.load(path, mmap_mode="c", allow_pickle=False)
        except ValueError as err:
            raise CorruptStoreError(f"cannot read {path} as a numeric .npy file: {err}") from None
    if suffix == ".safetensors":
        from safetensors import safe_open

        from repscope.registry import closest_names

        try:
            with safe_open(str(path), framework="numpy") as fh:
                keys = list(fh.keys())
                if not keys:
                    raise RepscopeValueError(f"{path} holds no tensors.")
                name = layer if layer is not None else keys[-1]
                if name not in keys:
                    close = closest_names(name, keys)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise UnknownNameError(
                        f"unknown layer {name!r} in {path}.{hint} Known layers: {', '.join(keys)}.",
                        name=name,
                        known=tuple(keys),
                    )
                return name, fh.get_tensor(name)
        except (UnknownNameError, RepscopeValueError):
            raise
        except Exception as err:
            raise CorruptStoreError(f"cannot read {path} as safetensors: {err}") from None
    raise RepscopeValueError(
        f"FEATURES must be a .npy file, a .safetensors file or a FeatureStore directory; got "
        f"{path.name!r}."
    )


def _describe(feats: _Features, part: Any, start: int) -> Any:
    """``row -> {index, text/id, position}`` for rows of ``part`` (samples from ``start``)."""
    meta = feats.metadata()
    offsets = part.offsets() if isinstance(part, _StorePart) and feats.ragged else None

    def describe(row: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if offsets is not None:
            j = int(np.searchsorted(offsets, row, side="right")) - 1
            sample, pos = start + j, row - int(offsets[j]) + int(feats.skip_first)
            out["position"] = pos
        else:
            sample, pos = start + row, None
        out["index"] = sample
        if "text" in meta:
            out["text"] = str(meta["text"][sample])[:_TEXT_CHARS]
        elif "id" in meta:
            out["id"] = str(meta["id"][sample])
        toks = meta.get("tokens")
        if pos is not None and toks is not None:
            seq = toks[sample]
            if seq is not None and pos < len(seq):
                out["token"] = str(seq[pos])
        return out

    return describe


def _n_vectors(part: Any) -> int:
    if isinstance(part, _StorePart):
        return int(part.offsets()[-1])
    return int(part.shape[0])


# ---------------------------------------------------------------------------- helpers


def _k_of(sae_model: Any) -> int | None:
    """The SAE's k as its record stores it (None for architectures without one)."""
    k = getattr(sae_model.cfg, "k", None)
    return int(k) if isinstance(k, int) else None


def _parse_ints(text: str, option: str) -> list[int]:
    from repscope.exceptions import RepscopeValueError

    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise RepscopeValueError(
            f"{option} must be comma-separated integers (e.g. 8,16,32); got {text!r}."
        ) from None
    if not out:
        raise RepscopeValueError(f"{option} must list at least one integer; got {text!r}.")
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "layer"


def _default_name(layer: str, arch: str, k: int | None, width: int) -> str:
    return f"sae-{_slug(layer)}-{arch}-" + (f"k{k}" if k is not None else f"w{width}")


def _coefficient_field(config_cls: Any) -> str | None:
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    return next((n for n in ("l1_coefficient", "l0_coefficient") if n in names), None)


def _evaluate_and_describe(
    sae: Any, feats: _Features, part: Any, start: int, batch_size: int, seed: int
) -> tuple[Any, list[dict[str, Any]]]:
    from repscope.sae.evaluation._inspect import top_activations, top_latents_values
    from repscope.sae.metrics import evaluate

    ev = evaluate(sae, part, batch_size=batch_size)
    top = top_activations(sae, part, batch_size=batch_size, seed=seed)
    return ev, top_latents_values(top, _describe(feats, part, start))


def _print_saes(values: list[dict[str, Any]], title: str) -> None:
    rows = [
        (
            v["architecture"],
            v["d_sae"],
            "—" if v["k"] is None else v["k"],
            v["fvu"],
            v["l0"],
            v["dead_fraction"],
            v["shrinkage"],
            v.get("path", ""),
        )
        for v in values
    ]
    print_table(
        rows,
        ["architecture", "width", "k", "FVU", "L0", "dead fraction", "shrinkage", "saved to"],
        title=title,
    )


# ---------------------------------------------------------------------------- commands


@click.group()
def sae() -> None:
    """Train, evaluate and list sparse autoencoders (SAEs) on features from disk."""


@sae.command()
@click.argument("features", type=click.Path())
@click.option(
    "--layer",
    default=None,
    help="Layer to train on (default: the last; a token layer trains on its tokens).",
)
@click.option(
    "--arch", default="topk", show_default=True, help="Architecture (see `repscope sae list`)."
)
@click.option("--width", type=int, default=None, help="Number of latents (d_sae).")
@click.option(
    "--expansion",
    type=float,
    default=None,
    help="Width as a multiple of the input dimension (default 8 unless --width).",
)
@click.option(
    "--k",
    "k",
    type=int,
    default=None,
    help="Active latents per input for TopK-family architectures (default 32).",
)
@click.option(
    "--k-sweep",
    default="",
    help="Comma-separated k values (e.g. 8,16,32): one SAE each, trained in one pass.",
)
@click.option(
    "--l1",
    "l1",
    type=float,
    default=None,
    help="Sparsity coefficient of L1/L0-penalised architectures (relu, gated, jumprelu).",
)
@click.option("--steps", type=int, default=None, help="Optimiser steps (default: --epochs).")
@click.option(
    "--epochs",
    type=float,
    default=None,
    help="Passes over the training vectors (default 1, unless --steps).",
)
@click.option("--batch-size", default=1024, show_default=True, help="Vectors per step.")
@click.option(
    "--lr",
    type=float,
    default=None,
    help="Adam learning rate (default 2e-4 * sqrt(16384 / width)).",
)
@click.option(
    "--holdout",
    default=0.1,
    show_default=True,
    help="Share of the samples (the last ones: whole paragraphs for a token layer) "
    "held out for evaluation.",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Where to save the SAE (default ./sae-<layer>-<arch>-k<k>); with --k-sweep, "
    "a folder holding one such directory per SAE.",
)
@click.option(
    "--skip-first",
    is_flag=True,
    help="Token layers: leave out each sample's first token (in many LMs an attention sink "
    "whose huge norm would dominate the error).",
)
@click.option("--dataset", default="", help="Dataset name to record with the results.")
@db_option
@json_option
def train(
    features: str,
    layer: str | None,
    arch: str,
    width: int | None,
    expansion: float | None,
    k: int | None,
    k_sweep: str,
    l1: float | None,
    steps: int | None,
    epochs: float | None,
    batch_size: int,
    lr: float | None,
    holdout: float,
    out: str | None,
    skip_first: bool,
    dataset: str,
    as_json: bool,
) -> None:
    """Train SAEs on a layer of FEATURES; evaluate them on held-out samples.

    One SAE, or one per k of --k-sweep trained in one pass over the data. FEATURES is a .npy
    file (memory-mapped), a .safetensors file or a FeatureStore directory. Each SAE is saved in
    SAELens's format, scored on the held-out samples (FVU, L0, dead latents, shrinkage, density
    histogram), described by the held-out inputs that activate a few latents most (the store's
    "text" or "id" metadata), and recorded as an "sae" result.
    """
    import dataclasses

    from repscope.exceptions import RepscopeValueError
    from repscope.sae import TrainSettings, architectures, create_sae, save_sae, sweep
    from repscope.sae._records import SAERunResult
    from repscope.sae.evaluation._inspect import never_fired_fraction

    s = settings()
    cls = architectures.get(arch)
    cfg_cls = cls.config_class
    has_k = "k" in {f.name for f in dataclasses.fields(cfg_cls)}
    if width is not None and expansion is not None:
        raise RepscopeValueError("pass either --width or --expansion, not both.")
    if steps is not None and epochs is not None:
        raise RepscopeValueError("pass either --steps or --epochs, not both.")
    if k is not None and k_sweep:
        raise RepscopeValueError("pass either --k or --k-sweep, not both.")
    if not 0.0 <= holdout < 1.0:
        raise RepscopeValueError(f"--holdout must be in [0, 1); got {holdout}.")
    if expansion is not None and not expansion > 0:
        raise RepscopeValueError(f"--expansion must be > 0; got {expansion}.")
    ks: list[int | None] = (
        list(dict.fromkeys(_parse_ints(k_sweep, "--k-sweep"))) if k_sweep else [k]
    )
    if not has_k and any(v is not None for v in ks):
        raise RepscopeValueError(
            f"architecture {arch!r} has no k (it is not TopK-style); drop --k/--k-sweep."
        )
    coef_field = _coefficient_field(cfg_cls)
    if l1 is not None and coef_field is None:
        raise RepscopeValueError(f"architecture {arch!r} has no L1/L0 coefficient; drop --l1.")

    feats = _Features(check_exists(features, "features"), layer, skip_first=skip_first)
    n_eval = max(1, round(holdout * feats.n)) if holdout > 0 else 0
    n_train = feats.n - n_eval
    if n_train < 1:
        raise RepscopeValueError(
            f"--holdout {holdout} leaves no training samples out of {feats.n}."
        )
    d_sae = width if width is not None else max(1, round((expansion or 8.0) * feats.d))
    params: dict[str, Any] = {"d_in": feats.d, "d_sae": d_sae, "seed": s.seed}
    if l1 is not None and coef_field is not None:
        params[coef_field] = l1
    models = [create_sae(arch, **params, **({"k": kv} if kv is not None else {})) for kv in ks]

    train_part = feats.part(0, n_train)
    eval_part = feats.part(n_train, feats.n) if n_eval else train_part
    eval_start = n_train if n_eval else 0
    n_eval_vec = _n_vectors(eval_part) if n_eval else 0
    n_train_vec = feats.n_vectors() - n_eval_vec
    if steps is None:
        steps = max(
            1, math.ceil((epochs if epochs is not None else 1.0) * n_train_vec / batch_size)
        )
    results = sweep(
        train_part,
        models,
        TrainSettings(n_steps=steps, batch_size=batch_size, lr=lr, seed=s.seed),
        device=s.device,
    )

    names = [
        _default_name(feats.layer, arch, getattr(r.sae.cfg, "k", None), d_sae) for r in results
    ]
    if out is None:
        dirs = [Path(n) for n in names]
    elif len(results) == 1:
        dirs = [Path(out)]
    else:
        dirs = [Path(out) / n for n in names]
    n_eval_vec = n_eval_vec or n_train_vec
    all_values = []
    run_params = {
        "features": str(feats.path),
        "architecture": arch,
        "d_sae": d_sae,
        "ks": ks if has_k else None,
        "l1": l1,
        "n_steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "holdout": holdout,
        "skip_first": skip_first,
        "seed": s.seed,
    }
    with (
        s.db() as db,
        db.run("sae train", run_params, model=feats.model, dataset=dataset) as run_id,
    ):
        for res, target in zip(results, dirs):
            t = time.perf_counter()
            saved = save_sae(res.sae, target)
            ev, tops = _evaluate_and_describe(
                res.sae, feats, eval_part, eval_start, max(batch_size, 1024), s.seed
            )
            run = SAERunResult(res.sae, ev, history=res.history, top_latents=tops, extra={
                "dead_fraction_train": never_fired_fraction(res), "path": str(saved.resolve()),
                "n_train": n_train_vec, "n_eval": n_eval_vec, "n_train_samples": n_train,
                "n_eval_samples": n_eval or n_train,
                "eval_on": "held-out" if n_eval else "training data", "n_steps": res.n_steps,
                "skip_first": skip_first, "seconds": res.seconds,
                "seconds_eval": time.perf_counter() - t,
                "lr": res.history.get("lr", [math.nan])[-1]})
            rec_params = {k: v for k, v in run_params.items() if k != "ks"}
            records = run.to_records(model=feats.model, dataset=dataset, layer=feats.layer,
                                     run_id=run_id,
                                     params={**rec_params, "k": _k_of(res.sae)})
            db.add_many(records)
            values = dict(records[0].values)
            all_values.append(values)
    if as_json:
        echo_json(all_values)
        return
    where = "held-out" if n_eval else "training"
    _print_saes(
        all_values,
        f"SAEs on {feats.model} · {feats.layer}: {n_train_vec} training "
        f"vectors, {n_eval_vec} {where} vectors, {steps} steps",
    )


@sae.command(name="eval")
@click.argument("sae_dir", type=click.Path())
@click.argument("features", type=click.Path())
@click.option(
    "--layer",
    default=None,
    help="Layer of FEATURES (default: the last); with --model, also the model's "
    "module path whose output the SAE replaces.",
)
@click.option("--batch-size", default=4096, show_default=True, help="Vectors per forward pass.")
@click.option(
    "--model",
    "model_name",
    default=None,
    help="A zoo causal LM (e.g. smollm2-135m): also measure the LM loss recovered.",
)
@click.option(
    "--texts-dataset", default="austen", show_default=True, help="Zoo text dataset for the LM loss."
)
@click.option("--n-texts", default=100, show_default=True, help="Texts for the LM loss.")
@click.option("--max-length", default=64, show_default=True, help="Tokens per text (LM loss).")
@click.option(
    "--skip-first",
    is_flag=True,
    help="Token layers: leave out each sample's first token (in many LMs an attention sink "
    "whose huge norm would dominate the error); with --model, position 0 is not spliced either.",
)
@click.option("--dataset", default="", help="Dataset name to record with the results.")
@db_option
@json_option
def eval_(
    sae_dir: str,
    features: str,
    layer: str | None,
    batch_size: int,
    model_name: str | None,
    texts_dataset: str,
    n_texts: int,
    max_length: int,
    skip_first: bool,
    dataset: str,
    as_json: bool,
) -> None:
    """Evaluate a saved SAE (SAE_DIR) on all of FEATURES and record it.

    Reports FVU, L0, dead latents, shrinkage and the top-activating inputs of a few latents;
    with --model, also the model's next-token loss clean, with the SAE's reconstruction
    spliced in at --layer, and zero-ablated (the fraction of loss recovered).
    """
    from repscope.exceptions import RepscopeValueError
    from repscope.sae._records import SAERunResult
    from repscope.sae.io import load_sae

    s = settings()
    if model_name is not None and layer is None:
        raise RepscopeValueError("--model needs --layer (the model's module path).")
    sae_path = check_exists(sae_dir, "SAE directory")
    feats = _Features(check_exists(features, "features"), layer, skip_first=skip_first)
    sae_model = load_sae(sae_path, device=s.device, expected_d_in=feats.d)
    t = time.perf_counter()
    part = feats.part(0, feats.n)
    ev, tops = _evaluate_and_describe(sae_model, feats, part, 0, batch_size, s.seed)
    extra: dict[str, Any] = {}
    if model_name is not None:
        from repscope.sae.evaluation._fidelity import spliced_lm_loss
        from repscope.zoo import load_dataset, load_model

        texts = list(load_dataset(texts_dataset, n=n_texts, seed=s.seed).inputs)
        lm = load_model(model_name, device=s.device)
        rec = spliced_lm_loss(
            lm,
            sae_model,
            feats.layer,
            texts,
            max_length=max_length,
            positions="skip_first" if skip_first else "all",
        )
        extra["loss_recovered"] = {
            "clean": rec.clean,
            "spliced": rec.spliced,
            "zero_ablated": rec.zero_ablated,
            "fraction_recovered": rec.fraction_recovered,
            "n_tokens": rec.n_tokens,
            "model": model_name,
            "texts": texts_dataset,
            "n_texts": len(texts),
        }
    run = SAERunResult(sae_model, ev, top_latents=tops, extra={
        "path": str(sae_path.resolve()), "n_eval": _n_vectors(part), "n_eval_samples": feats.n,
        "eval_on": "features", "skip_first": skip_first,
        "seconds_eval": time.perf_counter() - t, **extra})
    values = run.record_values()
    params = {
        "features": str(feats.path),
        "sae": str(sae_path),
        "architecture": values["architecture"],
        "d_sae": values["d_sae"],
        "k": values["k"],
        "lm": model_name,
        "skip_first": skip_first,
    }
    with s.db() as db, db.run("sae eval", params, model=feats.model, dataset=dataset) as run_id:
        db.add_many(run.to_records(model=feats.model, dataset=dataset, layer=feats.layer,
                                   params=params, run_id=run_id))
    if as_json:
        echo_json(values)
        return
    rows: list[tuple[str, Any]] = [
        ("FVU", values["fvu"]),
        ("explained variance", values["explained_variance"]),
        ("MSE", values["mse"]),
        ("L0", values["l0"]),
        ("dead fraction", values["dead_fraction"]),
        ("shrinkage", values["shrinkage"]),
    ]
    if "loss_recovered" in extra:
        d = extra["loss_recovered"]
        rows += [
            ("LM loss clean", d["clean"]),
            ("LM loss SAE spliced", d["spliced"]),
            ("LM loss zero-ablated", d["zero_ablated"]),
            ("fraction of loss recovered", d["fraction_recovered"]),
        ]
    print_table(
        rows,
        ["metric", "value"],
        title=f"{values['architecture']} SAE (width {values['d_sae']}) on "
        f"{feats.model} · {feats.layer}, {values['n_eval']} vectors",
    )


@sae.command(name="list")
@json_option
def list_(as_json: bool) -> None:
    """List the registered SAE architectures."""
    from repscope.sae import architectures

    infos = []
    for name in architectures.names():
        meta = architectures.meta(name)
        infos.append(
            {
                "architecture": name,
                "family": str(meta.get("family", "")),
                "sparse_codes": bool(meta.get("sparse_codes")),
                "config": getattr(meta.get("config"), "__name__", ""),
            }
        )
    if as_json:
        echo_json(infos)
        return
    print_table(
        [
            (i["architecture"], i["family"], "yes" if i["sparse_codes"] else "no", i["config"])
            for i in infos
        ],
        ["architecture", "family", "sparse codes", "config"],
        title="SAE architectures",
    )


COMMANDS = [sae]
