"""iLLaMA for Hugging Face Transformers.

Importing this package registers the model with the Auto classes and marks the classes for
`save_pretrained` to copy their code next to the weights (so `trust_remote_code=True` loads a saved
folder on a machine without this package).
"""

from transformers import AutoBackbone, AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification

from .configuration_illama import ILlamaConfig
from .configuration_vit_frozen_llm import ViTWithFrozenLLMConfig
from .image_processing_illama import ILlamaImageProcessor, build_image_processor
from .modeling_illama import ILlamaBackbone, ILlamaForImageClassification, ILlamaModel, ILlamaPreTrainedModel
from .modeling_vit_frozen_llm import ViTWithFrozenLLMForImageClassification, ViTWithFrozenLLMModel
from .presets import list_presets, load_preset

__version__ = "0.1.0"


def _register(config_class, model_class, classifier_class):
    """Auto classes here, and `auto_map` + copied code in every folder saved with save_pretrained."""
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoModelForImageClassification.register(config_class, classifier_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModel")
    classifier_class.register_for_auto_class("AutoModelForImageClassification")


_register(ILlamaConfig, ILlamaModel, ILlamaForImageClassification)
_register(ViTWithFrozenLLMConfig, ViTWithFrozenLLMModel, ViTWithFrozenLLMForImageClassification)
AutoBackbone.register(ILlamaConfig, ILlamaBackbone, exist_ok=True)
ILlamaBackbone.register_for_auto_class("AutoBackbone")
# Auto picks the "torchvision" backend whenever torchvision is installed and warns when a model has only a PIL
# processor; ours is the reference transform for both requests (a torchvision variant would differ numerically).
AutoImageProcessor.register(
    ILlamaConfig,
    image_processor_classes={"pil": ILlamaImageProcessor, "torchvision": ILlamaImageProcessor},
    exist_ok=True,
)
ILlamaImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = [
    "ILlamaBackbone",
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
