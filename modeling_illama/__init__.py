"""iLLaMA for Hugging Face Transformers.

Importing this package registers the model with the Auto classes and marks the classes for
`save_pretrained` to copy their code next to the weights (so `trust_remote_code=True` loads a saved
folder on a machine without this package).

The one exception is a command of the package starting (an `illama` / `illama-*` console script,
`python -m modeling_illama.cli...` or `python scripts/<tool>.py`): it parses its arguments without
Transformers or torch (so `--help` is instant) and calls `register_auto_classes()` once it runs. The public names load on first access either way.
"""

import importlib
import os
import sys

__version__ = "0.1.0"

# public name -> submodule that defines it (loaded on first access, as Transformers' own lazy modules do)
_EXPORTS = {
    "ILlamaConfig": ".configuration_illama",
    "build_image_processor": ".image_processing_illama",
    "ILlamaImageProcessor": ".image_processing_illama",
    "ILlamaBackbone": ".modeling_illama",
    "ILlamaForImageClassification": ".modeling_illama",
    "ILlamaModel": ".modeling_illama",
    "ILlamaPreTrainedModel": ".modeling_illama",
    "ViTWithFrozenLLMConfig": ".configuration_vit_frozen_llm",
    "ViTWithFrozenLLMForImageClassification": ".modeling_vit_frozen_llm",
    "ViTWithFrozenLLMModel": ".modeling_vit_frozen_llm",
    "list_presets": ".presets",
    "load_preset": ".presets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    register_auto_classes()
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


def _register(config_class, model_class, classifier_class):
    """Auto classes here, and `auto_map` + copied code in every folder saved with save_pretrained."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoModelForImageClassification.register(config_class, classifier_class, exist_ok=True)
    config_class.register_for_auto_class()
    model_class.register_for_auto_class("AutoModel")
    classifier_class.register_for_auto_class("AutoModelForImageClassification")


_registered = False


def register_auto_classes() -> None:
    """Register iLLaMA (and the ViT with frozen LLaMA layers) with the Auto classes; runs once."""
    global _registered
    if _registered:
        return
    _registered = True
    from transformers import AutoBackbone, AutoImageProcessor

    from .configuration_illama import ILlamaConfig
    from .configuration_vit_frozen_llm import ViTWithFrozenLLMConfig
    from .image_processing_illama import ILlamaImageProcessor
    from .modeling_illama import ILlamaBackbone, ILlamaForImageClassification, ILlamaModel
    from .modeling_vit_frozen_llm import ViTWithFrozenLLMForImageClassification, ViTWithFrozenLLMModel

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


def _command_starting() -> bool:
    """True while an `illama` / `illama-*` console script, `python -m modeling_illama.cli...` or a script of the
    checkout's scripts/ folder starts."""
    words = list(getattr(sys, "orig_argv", sys.argv))[1:]
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-m":
            return words[index + 1 : index + 2] != [] and words[index + 1].startswith(f"{__name__}.cli")
        if word == "-c":
            return False
        index += 2 if word in ("-X", "-W") else 1
        if not word.startswith("-"):
            name, scripts = os.path.basename(word), os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts")
            console_script = name == "illama" or (name.startswith("illama-") and "." not in name)
            return console_script or os.path.dirname(os.path.abspath(word)) == os.path.abspath(scripts)
    return False


if not _command_starting():
    register_auto_classes()
