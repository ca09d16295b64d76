"""EfficientNet-Lite that also accepts raw images (imported only when such a model loads,
because it imports ``efficientnet_lite_pytorch``)."""

from __future__ import annotations

from typing import Any

import torch
from efficientnet_lite_pytorch import EfficientNet

from repscope.zoo._vision import preprocess_efficientnet

__all__ = ["RawImageEfficientNet"]


class RawImageEfficientNet(EfficientNet):
    """``efficientnet_lite_pytorch.EfficientNet`` whose ``forward`` and ``extract_features``
    also take raw images.

    A float tensor is used as is (an already preprocessed (n, 3, H, W) batch). Anything else
    (uint8 images of shape (n, h, w) or (n, h, w, c), numpy arrays) first goes through
    :func:`~repscope.zoo.preprocess_efficientnet` at ``input_resolution``. Module paths,
    weights and outputs are those of the parent class.
    """

    #: Side length (pixels) raw images are resized to.
    input_resolution: int = 112

    def _prepare(self, inputs: Any) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor) and inputs.is_floating_point():
            return inputs
        x = preprocess_efficientnet(inputs, resolution=self.input_resolution)
        w = self._conv_stem.weight
        return x.to(device=w.device, dtype=w.dtype)

    def extract_features(self, inputs: Any) -> torch.Tensor:
        """Head features after ReLU6: (n, 1280, ceil(H/32), ceil(W/32)); prints nothing."""
        return super().extract_features(self._prepare(inputs))

    def forward(self, inputs: Any) -> torch.Tensor:
        """ImageNet logits (n, 1000)."""
        return super().forward(self._prepare(inputs))
