"""iLLaMA for Hugging Face Transformers.

Importing this package registers the model with the Auto classes and marks the classes for
`save_pretrained` to copy their code next to the weights (so `trust_remote_code=True` loads a saved
folder on a machine without this package).
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .configuration_illama import ILlamaConfig
from .image_processing import build_image_processor
from .image_processing_illama import ILlamaImageProcessor
from .modeling_illama import ILlamaForImageClassification, ILlamaModel, ILlamaPreTrainedModel
from .modeling_vit_frozen_llm import ViTWithFrozenLLMConfig, ViTWithFrozenLLMForImageClassification, ViTWithFrozenLLMModel
from .presets import list_presets, load_preset

__version__ = "0.1.0"

AutoConfig.register(ILlamaConfig.model_type, ILlamaConfig, exist_ok=True)
AutoModel.register(ILlamaConfig, ILlamaModel, exist_ok=True)
AutoModelForImageClassification.register(ILlamaConfig, ILlamaForImageClassification, exist_ok=True)
ILlamaConfig.register_for_auto_class()
ILlamaModel.register_for_auto_class("AutoModel")
ILlamaForImageClassification.register_for_auto_class("AutoModelForImageClassification")
AutoImageProcessor.register(ILlamaConfig, image_processor_classes={"pil": ILlamaImageProcessor}, exist_ok=True)
ILlamaImageProcessor.register_for_auto_class("AutoImageProcessor")
AutoConfig.register(ViTWithFrozenLLMConfig.model_type, ViTWithFrozenLLMConfig, exist_ok=True)
AutoModel.register(ViTWithFrozenLLMConfig, ViTWithFrozenLLMModel, exist_ok=True)
AutoModelForImageClassification.register(ViTWithFrozenLLMConfig, ViTWithFrozenLLMForImageClassification, exist_ok=True)
ViTWithFrozenLLMConfig.register_for_auto_class()
ViTWithFrozenLLMModel.register_for_auto_class("AutoModel")
ViTWithFrozenLLMForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "ILlamaConfig",
    "ILlamaForImageClassification",
    "ILlamaImageProcessor",
    "ILlamaModel",
    "ILlamaPreTrainedModel",
    "ViTWithFrozenLLMConfig",
    "ViTWithFrozenLLMForImageClassification",
    "ViTWithFrozenLLMModel",
    "build_image_processor",
    "list_presets",
    "load_preset",
]
