"""ttt-hf: test-time-training vision transformers and general-purpose in-context learners for the Hugging Face
ecosystem.

Importing the package registers the TTT-ViT classes with transformers' Auto classes, so that
`AutoConfig`, `AutoModel`, `AutoModelForImageClassification`, `AutoImageProcessor` and
`pipeline("image-classification")` load TTT-ViT checkpoints without `trust_remote_code`; that pipeline then
reads images in their own mode (see modeling/pipeline_ttt_vit.py) and is the stock one for every other model.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForTokenClassification,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling import (
    MIXER_PRESETS,
    PRESETS,
    GPICLConfig,
    GPICLForInContextClassification,
    GPICLModel,
    GPICLOutput,
    GPICLPreTrainedModel,
    TTTViTConfig,
    TTTViTForImageClassification,
    TTTViTImageClassificationPipeline,
    TTTViTImageClassifierOutput,
    TTTViTImageProcessor,
    TTTViTModel,
    TTTViTModelOutput,
    TTTViTPreTrainedModel,
)
from .modeling.pipeline_gpicl import InContextClassificationPipeline

__version__ = "0.1.0"

AutoConfig.register(TTTViTConfig.model_type, TTTViTConfig, exist_ok=True)
AutoModel.register(TTTViTConfig, TTTViTModel, exist_ok=True)
AutoModelForImageClassification.register(TTTViTConfig, TTTViTForImageClassification, exist_ok=True)
AutoConfig.register(GPICLConfig.model_type, GPICLConfig, exist_ok=True)
AutoModel.register(GPICLConfig, GPICLModel, exist_ok=True)
# GPICL predicts a class at every position of a sequence: transformers' token classification
AutoModelForTokenClassification.register(GPICLConfig, GPICLForInContextClassification, exist_ok=True)
AutoImageProcessor.register(TTTViTConfig, image_processor_classes={"pil": TTTViTImageProcessor}, exist_ok=True)
# GPICL's own task: support examples with labels and queries in, predictions out (modeling/pipeline_gpicl.py)
PIPELINE_REGISTRY.register_pipeline(
    "in-context-classification",
    pipeline_class=InContextClassificationPipeline,
    pt_model=AutoModelForTokenClassification,
    type="multimodal",
)
# Not register_pipeline: that would tag the class so that Pipeline.save_pretrained writes `custom_pipelines`.
PIPELINE_REGISTRY.supported_tasks["image-classification"]["impl"] = TTTViTImageClassificationPipeline

__all__ = [
    "GPICLConfig",
    "GPICLForInContextClassification",
    "GPICLModel",
    "GPICLOutput",
    "GPICLPreTrainedModel",
    "InContextClassificationPipeline",
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
