"""Model -> activations: forward hooks, layer names = module paths, pooling, resumable stores.

The main entry points:

- :func:`extract` runs a model over inputs and returns ``{layer: array}``.
- :func:`extract_to_store` does the same into a :class:`~repscope.store.FeatureStore`
  (resumable after an interruption) and returns the store.
- :func:`list_layers` gives the names ``extract`` accepts (module paths for torch models,
  tensor names for ONNX graphs).
- :func:`capture` is the hook context manager underneath, for custom forward loops;
  :func:`intervene` replaces module outputs inside a ``with`` block (steering, ablation, SAE
  splicing, interchange interventions), with :func:`add_direction` / :func:`ablate_direction`.

Adapters (chosen by :func:`make_adapter` from the model's type) cover Hugging Face
``transformers`` encoders and causal LMs, ``sentence-transformers`` models, ONNX Runtime graphs
and any ``torch.nn.Module`` taking tensors, plus the zoo's ``LoadedModel``.
"""

from repscope.extract._base import BLOCKS, OUTPUT, Adapter, Batch, PreparedChunk
from repscope.extract._dispatch import list_layers, make_adapter
from repscope.extract._extract import extract, extract_to_store
from repscope.extract._hooks import StopForward, capture
from repscope.extract._intervene import ablate_direction, add_direction, intervene
from repscope.extract._onnx import OUTPUTS, OnnxAdapter
from repscope.extract._pooling import POOLINGS, Pooling
from repscope.extract._summary import ExtractionResult
from repscope.extract._torch import TorchAdapter
from repscope.extract._transformers import TransformersAdapter, sentence_transformer_adapter

__all__ = [
    "BLOCKS",
    "OUTPUT",
    "OUTPUTS",
    "POOLINGS",
    "Adapter",
    "Batch",
    "ExtractionResult",
    "OnnxAdapter",
    "Pooling",
    "PreparedChunk",
    "StopForward",
    "TorchAdapter",
    "TransformersAdapter",
    "ablate_direction",
    "add_direction",
    "capture",
    "extract",
    "extract_to_store",
    "intervene",
    "list_layers",
    "make_adapter",
    "sentence_transformer_adapter",
]
