"""Model definitions of ttt-hf (installed as `ttt_hf.modeling`; copied to the Hub as remote code)."""

from .configuration_gpicl import GPICLConfig
from .configuration_ttt_vit import MIXER_PRESETS, PRESETS, TTTViTConfig
from .image_processing_ttt_vit import TTTViTImageProcessor
from .modeling_gpicl import GPICLForInContextClassification, GPICLModel, GPICLOutput, GPICLPreTrainedModel
from .modeling_ttt_vit import (
    TTTViTForImageClassification,
    TTTViTImageClassifierOutput,
    TTTViTModel,
    TTTViTModelOutput,
    TTTViTPreTrainedModel,
)
from .pipeline_ttt_vit import TTTViTImageClassificationPipeline

__all__ = [
    "GPICLConfig",
    "GPICLForInContextClassification",
    "GPICLModel",
    "GPICLOutput",
    "GPICLPreTrainedModel",
    "MIXER_PRESETS",
    "PRESETS",
    "TTTViTConfig",
    "TTTViTForImageClassification",
    "TTTViTImageClassificationPipeline",
    "TTTViTImageClassifierOutput",
    "TTTViTImageProcessor",
    "TTTViTModel",
    "TTTViTModelOutput",
    "TTTViTPreTrainedModel",
]
