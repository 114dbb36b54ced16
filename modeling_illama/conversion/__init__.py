"""Authors' iLLaMA checkpoints <-> Hugging Face folders: safe loading, the key table, size detection,
a reference forward pass on the authors' layout, and model cards."""

from ..labels import imagenet_id2label
from .cards import RELEASED_VARIANTS, ReleasedVariant, released_variant, render_card, write_released_cards
from .convert import VerificationError, convert_all, convert_checkpoint, export_official, verify_against_reference
from .detect import count_parameters, detect_config, read_architecture
from .keys import KEY_TABLE, check_official_state_dict, hf_to_official, official_shapes, official_to_hf
from .reference import reference_forward
from .safe_load import CheckpointError, UnsafeCheckpointError, load_official_state_dict

__all__ = [
    "KEY_TABLE",
    "RELEASED_VARIANTS",
    "CheckpointError",
    "ReleasedVariant",
    "UnsafeCheckpointError",
    "VerificationError",
    "check_official_state_dict",
    "convert_all",
    "convert_checkpoint",
    "count_parameters",
    "detect_config",
    "export_official",
    "hf_to_official",
    "imagenet_id2label",
    "load_official_state_dict",
    "official_shapes",
    "official_to_hf",
    "read_architecture",
    "reference_forward",
    "released_variant",
    "render_card",
    "verify_against_reference",
    "write_released_cards",
]
