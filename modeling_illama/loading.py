"""A saved classifier loaded for inference the same way from a local folder or a Hub id: every weight from the
checkpoint (a partly random model is an error, not a warning on stderr) and the checkpoint's own processor."""

from __future__ import annotations

import logging
import os
import pickle
import re

import torch

logger = logging.getLogger(__name__)


class MissingWeightsError(ValueError):
    """Weights of the model are absent from the checkpoint (or have other shapes): they would be random."""


def is_local_path(model: str) -> bool:
    """`model` names a local folder, or cannot be a Hub id ("name" or "org/name")."""
    return os.path.exists(model) or model.startswith((os.sep, ".", "~")) or model.count("/") > 1


def check_model_reference(model: str) -> None:
    """A local path must be a saved model folder; a Hub id is left to `from_pretrained`."""
    if not is_local_path(model):
        return
    if not os.path.exists(model):
        raise FileNotFoundError(f"no such folder: {model}")
    if not os.path.isfile(os.path.join(model, "config.json")):
        raise ValueError(
            f"{model} is not a saved model folder (no config.json); pass the folder written by illama-train or "
            "illama-convert, or a Hub id"
        )


def load_classifier(model: str, allow_missing_weights: bool = False, dtype=torch.float32, **kwargs):
    """`AutoModelForImageClassification.from_pretrained`, refusing a model with weights missing from the checkpoint.

    Transformers initialises missing weights randomly and only logs it, and stops on a weight of another shape
    with a RuntimeError that points at a printed report; here both raise a MissingWeightsError naming them
    unless `allow_missing_weights` (the weights are then random, with a warning). Weights in the checkpoint
    that the model does not use are logged as a warning.
    """
    from transformers import AutoModelForImageClassification

    check_model_reference(model)
    check_weight_files(model)
    kwargs.setdefault("ignore_mismatched_sizes", True)  # reported by check_loading_info, by name
    try:
        net, info = AutoModelForImageClassification.from_pretrained(
            model, dtype=dtype, output_loading_info=True, **kwargs
        )
    except pickle.UnpicklingError as error:  # weights_only refused a pickled object: nothing was executed
        found = re.search(r"GLOBAL \S+", str(error))
        raise ValueError(
            f"refused to load the weights of {model}: pytorch_model.bin holds a pickled object that is not a tensor"
            f"{f' ({found.group(0)})' if found else ''}; nothing from it was executed. Use a model.safetensors "
            "checkpoint, or re-save the state dict of a file you trust"
        ) from None
    check_loading_info(model, info, allow_missing_weights)
    return net


def check_weight_files(model: str) -> None:
    """A local folder's safetensors weights must be complete (an empty or truncated file is named, not a
    SafetensorError from deep inside loading)."""
    if not os.path.isdir(model):
        return
    from .utils.file_checks import first_damaged_file

    if damaged := first_damaged_file(model):
        name, problem = damaged
        raise ValueError(f"{os.path.join(model, name)} is damaged: {problem}; re-save or re-download the model folder")


def check_loading_info(
    model: str,
    info: dict,
    allow_missing_weights: bool = False,
    new_modules: tuple[str, ...] = (),
    remedy: str = "pass --allow-missing-weights (allow_missing_weights=True) to use it anyway",
) -> None:
    """Raise a MissingWeightsError when `from_pretrained(..., output_loading_info=True)` reports weights missing
    from the checkpoint or of another shape, except under the `new_modules` prefixes (e.g. a replaced head)."""

    def kept(keys) -> list[str]:
        names = (str(key[0] if isinstance(key, (tuple, list)) else key) for key in keys or [])
        return sorted(name for name in names if not (new_modules and name.startswith(new_modules)))

    missing, mismatched = kept(info.get("missing_keys")), kept(info.get("mismatched_keys"))
    if info.get("unexpected_keys"):
        logger.warning("%s holds weights the model does not use: %s", model, sorted(info["unexpected_keys"])[:10])
    if not (missing or mismatched):
        return
    described = "; ".join(
        f"{what} ({len(keys)}): {keys[:8]}{'...' if len(keys) > 8 else ''}"
        for what, keys in (("missing", missing), ("shape mismatch", mismatched))
        if keys
    )
    if not allow_missing_weights:
        raise MissingWeightsError(
            f"{model} does not hold every weight of the model, so these would be randomly initialised: "
            f"{described}. {remedy[0].upper()}{remedy[1:]}"
        )
    logger.warning("%s: randomly initialised weights (allowed): %s", model, described)


def load_image_processor(model: str, config):
    """The checkpoint's own `preprocessor_config.json` (local or Hub), else the authors' eval transform."""
    from transformers import AutoImageProcessor

    from .image_processing_illama import build_image_processor

    if is_local_path(model) and not os.path.isfile(os.path.join(model, "preprocessor_config.json")):
        found = False
    else:
        from transformers.utils import cached_file

        found = cached_file(model, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False) is not None
    if found:
        return AutoImageProcessor.from_pretrained(model)
    logger.warning(
        "no preprocessor_config.json in %s: using the authors' eval transform at %s px", model, config.image_size
    )
    return build_image_processor(config.image_size)
