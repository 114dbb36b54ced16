"""Authors' checkpoint -> Hugging Face folder, and back (`export_official`)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..configuration_illama import to_pair
from ..llm.safetensors_index import SafetensorsCheckpoint
from .cards import RELEASED_VARIANTS, ReleasedVariant, released_variant, render_card
from .detect import count_parameters, detect_config
from .keys import check_official_state_dict, hf_to_official, official_shapes, official_to_hf
from .reference import reference_forward
from .safe_load import CheckpointError, load_official_state_dict

logger = logging.getLogger(__name__)

VERIFY_TOLERANCE = 1e-4


class VerificationError(RuntimeError):
    """The converted model's logits differ from the reference forward pass on the authors' layout."""


def _atomic_output(output_dir: Path, overwrite: bool):
    """A temp folder next to `output_dir`; raise early if `output_dir` exists and may not be replaced."""
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"output folder {output_dir} already exists (pass overwrite=True / --overwrite).")
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output {output_dir} exists and is not a folder")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))


def _publish(tmp_dir: Path, output_dir: Path) -> None:
    """Move the finished temp folder into place.

    A new folder is one rename. Into an existing folder (`overwrite`), each written file replaces its namesake
    with an atomic rename, config.json last; files the conversion did not write are left as they are.
    """
    if not output_dir.exists():
        tmp_dir.rename(output_dir)
        return
    names = sorted(os.listdir(tmp_dir), key=lambda name: name == "config.json")
    for name in names:
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(f"cannot write {name} into {output_dir}: a folder of that name is in the way")
    for name in names:
        os.replace(tmp_dir / name, output_dir / name)
    tmp_dir.rmdir()
    kept = sorted(set(os.listdir(output_dir)) - set(names))
    if kept:
        logger.info("replaced %d file(s) in %s; kept the other files there: %s", len(names), output_dir, kept)


def verify_against_reference(
    model_dir: str | Path,
    official_state_dict: dict[str, torch.Tensor],
    config,
    num_inputs: int = 2,
    seed: int = 0,
    tolerance: float = VERIFY_TOLERANCE,
) -> dict[str, float]:
    """Max |logit difference| between the saved folder (eager and sdpa, fp32) and the reference forward pass."""
    from transformers import AutoModelForImageClassification

    height, width = to_pair(config.image_size)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(num_inputs, config.num_channels, height, width, generator=generator)
    fp32_state = {key: tensor.float() for key, tensor in official_state_dict.items()}
    expected = reference_forward(
        fp32_state,
        pixels,
        num_heads=config.num_attention_heads,
        eps=config.rms_norm_eps,
        theta=config.rope_parameters["rope_theta"],
    )
    differences = {}
    for implementation in ("eager", "sdpa"):
        model = AutoModelForImageClassification.from_pretrained(
            model_dir, trust_remote_code=True, dtype=torch.float32, attn_implementation=implementation
        ).eval()
        with torch.no_grad():
            logits = model(pixel_values=pixels).logits
        differences[implementation] = (logits - expected).abs().max().item()
        del model
    for implementation, difference in differences.items():
        logger.info(
            "verify [%s]: max |logits - reference| = %.3e over %d random inputs",
            implementation,
            difference,
            num_inputs,
        )
    worst = max(differences.values())
    if not worst <= tolerance:
        raise VerificationError(
            f"converted model differs from the reference forward pass on the authors' layout: max abs logit "
            f"difference {worst:.3e} > {tolerance:.0e} ({differences})."
        )
    return differences


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    model: str | None = None,
    image_size=None,
    num_heads: int | None = None,
    verify: bool = False,
    num_verify_inputs: int = 2,
    overwrite: bool = False,
    variant: ReleasedVariant | None = None,
) -> Path:
    """Convert one authors' checkpoint (.pth or .safetensors) into a Hugging Face folder.

    The folder (config.json, model.safetensors, preprocessor_config.json, the remote-code modules and a
    README.md card) is built in a temp folder next to `output_dir` and renamed at the end, so a failure
    leaves nothing behind. Returns `output_dir`.
    """
    from .. import ILlamaForImageClassification, build_image_processor

    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    official, extras = load_official_state_dict(checkpoint)
    config, preset = detect_config(official, model=model, image_size=image_size, num_heads=num_heads)
    variant = variant or released_variant(checkpoint)
    if variant is not None and (preset != variant.preset or count_parameters(official) != variant.num_parameters):
        logger.warning(
            "%s is named like the released %s but its shapes say %s: writing a generic card.",
            checkpoint.name,
            variant.name,
            preset or "a custom size",
        )
        variant = None
    logger.info(
        "%s: %s (hidden %d, depth %d, heads %d, image %s, %d classes, %s parameters%s)",
        checkpoint,
        preset or "custom size",
        config.hidden_size,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.image_size,
        config.num_labels,
        f"{count_parameters(official):,}",
        f", epoch {extras['epoch']}" if "epoch" in extras else "",
    )

    hf_model = ILlamaForImageClassification(config)
    hf_model.load_state_dict(official_to_hf(official), strict=True, assign=True)  # keeps the checkpoint's dtype
    hf_model.eval()

    tmp_dir = _atomic_output(output_dir, overwrite)
    try:
        hf_model.save_pretrained(tmp_dir)
        del hf_model
        build_image_processor(config.image_size).save_pretrained(tmp_dir)
        name = variant.name if variant else output_dir.name
        card = render_card(
            name,
            variant,
            hidden_size=config.hidden_size,
            num_hidden_layers=config.num_hidden_layers,
            resolution=to_pair(config.image_size)[0],
            num_parameters=count_parameters(official),
            num_labels=config.num_labels,
            source=f"`{checkpoint.name}`" if variant is None else None,
        )
        (tmp_dir / "README.md").write_text(card, encoding="utf-8")
        if verify:
            verify_against_reference(tmp_dir, official, config, num_inputs=num_verify_inputs)
        _publish(tmp_dir, output_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    logger.info("wrote %s", output_dir)
    return output_dir


def convert_all(
    source_dir: str | Path,
    output_dir: str | Path,
    verify: bool = False,
    num_verify_inputs: int = 2,
    overwrite: bool = False,
) -> list[Path]:
    """Convert every released file name found in `source_dir` (or below it) into `output_dir/<variant name>`."""
    source_dir, output_dir = Path(source_dir), Path(output_dir)
    if not source_dir.is_dir():
        raise NotADirectoryError(f"source folder not found: {source_dir}")
    files = {}
    for variant in RELEASED_VARIANTS:
        matches = sorted(path for path in source_dir.rglob(variant.filename) if path.is_file())
        if matches:
            files[variant] = matches[0]
    found = list(files)
    if not found:
        raise FileNotFoundError(
            f"no released iLLaMA checkpoint in {source_dir}; expected any of "
            f"{[variant.filename for variant in RELEASED_VARIANTS]}."
        )
    written = []
    for variant in found:
        written.append(
            convert_checkpoint(
                files[variant],
                output_dir / variant.name,
                model=variant.preset,
                verify=verify,
                num_verify_inputs=num_verify_inputs,
                overwrite=overwrite,
                variant=variant,
            )
        )
    return written


def export_official(model, output_path: str | Path, overwrite: bool = False) -> Path:
    """Write a Hugging Face iLLaMA classifier (a folder or an ILlamaForImageClassification) in the authors' layout.

    `.pth`: torch.save of a plain dict of tensors; `.safetensors`: safetensors. The tensors are written as they
    are (same dtype, same values), so authors' -> ours -> authors' is bit-exact.
    """
    from ..configuration_illama import ILlamaConfig

    output_path = Path(output_path)
    if output_path.suffix not in (".pth", ".pt", ".safetensors"):
        raise ValueError(f"output file must end in .pth, .pt or .safetensors, got {output_path.name}")
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"output file {output_path} already exists (pass overwrite=True / --overwrite).")
    if isinstance(model, (str, Path)):
        model_dir = Path(model)
        config = ILlamaConfig.from_pretrained(model_dir)
        with SafetensorsCheckpoint(model_dir) as checkpoint:
            state_dict = dict(checkpoint.iter_tensors(checkpoint.keys()))
    else:
        config, state_dict = model.config, model.state_dict()
    if config.frozen_llm:
        raise CheckpointError("models with frozen LLM layers have no counterpart in the authors' iLLaMA layout.")
    official = {key: tensor.detach().cpu().contiguous() for key, tensor in hf_to_official(state_dict).items()}
    check_official_state_dict(official, config)
    official = {key: official[key] for key in official_shapes(config)}  # the authors' module order
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = output_path.with_name(f".{output_path.name}.tmp")
    if output_path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(official, str(tmp_path), metadata={"format": "pt"})
    else:
        torch.save(official, tmp_path)
    tmp_path.replace(output_path)
    logger.info("wrote %s (%d tensors, %s parameters)", output_path, len(official), f"{count_parameters(official):,}")
    return output_path
