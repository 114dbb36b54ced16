"""The eight released checkpoints (docs/DESIGN.md, released checkpoints) and Hub-style model cards for them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..image_processing_illama import EVAL_CROP_PCT, EVAL_WARP_FROM

HF_SOURCE_REPO = "techmonsterwang/iLLaMA"
PAPER_URL = "https://arxiv.org/abs/2404.06773"
CODE_URL = "https://github.com/techmonsterwang/iLLaMA"

# The authors' GitHub repository has no LICENSE file and its README names no licence for the weights: the card
# says so instead of inventing one (Hub metadata `license: unknown`).
WEIGHTS_LICENSE = (
    "The licence of the released weights is not stated by the authors: their code repository "
    "([techmonsterwang/iLLaMA](" + CODE_URL + ")) has no LICENSE file and its README "
    "names none. Ask the authors before redistributing or using them commercially. The "
    "conversion code (illama-transformers, Apache-2.0) does not license the weights."
)

CITATION = """@article{wang2024illama,
  title   = {Adapting LLaMA Decoder to Vision Transformer},
  author  = {Wang, Jiahao and Shao, Wenqi and Chen, Mengzhao and Wu, Chengyue and Liu, Yong and Wu, Taiqiang and Zhang, Kaipeng and Zhang, Songyang and Chen, Kai and Luo, Ping},
  journal = {arXiv preprint arXiv:2404.06773},
  year    = {2024}
}"""


@dataclass(frozen=True)
class ReleasedVariant:
    """One released .pth file and the numbers the paper reports for it."""

    name: str  # our folder / repo name
    filename: str  # the authors' file in techmonsterwang/iLLaMA
    preset: str
    resolution: int
    pretraining: str | None  # None: ImageNet-1K only
    top1: float
    num_parameters: int  # exact: sum of numel over the state dict
    macs: str

    @property
    def size(self) -> str:
        return self.preset.split("-")[1]


RELEASED_VARIANTS: tuple[ReleasedVariant, ...] = (
    ReleasedVariant(
        "illama-tiny-224-in1k", "illama-tiny-in1k-75.0.pth", "illama-tiny-224", 224, None, 75.0, 5_701_096, "1.3G"
    ),
    ReleasedVariant(
        "illama-small-224-in1k", "illama-small-in1k-79.9.pth", "illama-small-224", 224, None, 79.9, 22_018_024, "4.6G"
    ),
    ReleasedVariant(
        "illama-base-224-in1k", "illama-base-in1k-81.6.pth", "illama-base-224", 224, None, 81.6, 86_502_376, "17.6G"
    ),
    ReleasedVariant(
        "illama-base-384-in1k",
        "illama-base-in1k-384-83.0.pth",
        "illama-base-384",
        384,
        None,
        83.0,
        86_794_216,
        "55.5G",
    ),
    ReleasedVariant(
        "illama-base-224-in21k-ft-in1k",
        "illama-base-in21kin1k-224-83.6.pth",
        "illama-base-224",
        224,
        "ImageNet-21K",
        83.6,
        86_502_376,
        "17.6G",
    ),
    ReleasedVariant(
        "illama-base-384-in21k-ft-in1k",
        "illama-base-in21kin1k-384-85.0.pth",
        "illama-base-384",
        384,
        "ImageNet-21K",
        85.0,
        86_794_216,
        "55.5G",
    ),
    ReleasedVariant(
        "illama-large-224-in21k-ft-in1k",
        "illama-large-in21kin1k-224-84.8.pth",
        "illama-large-224",
        224,
        "ImageNet-21K",
        84.8,
        310_445_032,
        "62.8G",
    ),
    ReleasedVariant(
        "illama-large-384-in21k-ft-in1k",
        "illama-large-in21kin1k-384-86.0.pth",
        "illama-large-384",
        384,
        "ImageNet-21K",
        86.0,
        310_834_152,
        "194.7G",
    ),
)


def released_variant(filename: str | Path) -> ReleasedVariant | None:
    """The released variant with this file name, if any."""
    name = Path(filename).name
    return next((variant for variant in RELEASED_VARIANTS if variant.filename == name), None)


def _eval_transform(resolution: int) -> str:
    if resolution < EVAL_WARP_FROM:
        return (
            f"resize the shorter side to {int(resolution / EVAL_CROP_PCT)} (bicubic), centre crop {resolution}, "
            "ImageNet mean/std"
        )
    return f"bicubic resize to {resolution}x{resolution} (no crop), ImageNet mean/std"


def _front_matter(datasets: list[str], model_name: str, top1: float | None) -> str:
    lines = [
        "---",
        "license: unknown",
        "library_name: transformers",
        "pipeline_tag: image-classification",
        "tags:",
        "- image-classification",
        "- vision",
        "- illama",
        "- custom_code",
        "datasets:",
    ]
    lines += [f"- {dataset}" for dataset in datasets]
    lines += ["metrics:", "- accuracy"]
    if top1 is not None:
        lines += [
            "model-index:",
            f"- name: {model_name}",
            "  results:",
            "  - task:",
            "      type: image-classification",
            "      name: Image Classification",
            "    dataset:",
            "      type: imagenet-1k",
            "      name: ImageNet-1K",
            "      split: validation",
            "    metrics:",
            "    - type: accuracy",
            "      name: Top-1 Accuracy",
            f"      value: {top1}",
            "      verified: false",
        ]
    return "\n".join(lines + ["---"])


def render_card(
    name: str,
    variant: ReleasedVariant | None = None,
    *,
    hidden_size: int | None = None,
    num_hidden_layers: int | None = None,
    resolution: int | None = None,
    num_parameters: int | None = None,
    num_labels: int = 1000,
    source: str | None = None,
) -> str:
    """Markdown model card. With `variant`, the paper's numbers for that released checkpoint are filled in."""
    if variant is not None:
        resolution, num_parameters = variant.resolution, variant.num_parameters
        source = source or f"`{variant.filename}` from [{HF_SOURCE_REPO}](https://huggingface.co/{HF_SOURCE_REPO})"
    datasets = ["imagenet-1k"] if variant is None or variant.pretraining is None else ["imagenet-21k", "imagenet-1k"]
    title = f"iLLaMA-{variant.size.capitalize()}, {resolution} px" if variant else f"iLLaMA ({name})"
    if variant is not None and variant.pretraining:
        title += ", ImageNet-21K pretrained, ImageNet-1K fine-tuned"
    elif variant is not None:
        title += ", ImageNet-1K"
    out = [
        _front_matter(datasets if num_labels == 1000 else [], name, variant.top1 if variant else None),
        "",
        f"# {title}",
        "",
    ]
    out += [
        "iLLaMA ([Wang et al., *Adapting LLaMA Decoder to Vision Transformer*](" + PAPER_URL + ")) is a LLaMA-style "
        "decoder used as a vision transformer: the class token is appended at the END of the patch sequence, "
        'attention is causal (trained with a "soft mask" that anneals from bidirectional to causal), and the '
        "blocks use RMSNorm, SwiGLU and rotary position embeddings.",
        "",
        "This folder holds the authors' weights converted to Hugging Face Transformers (safetensors) with "
        "`illama-convert` from the illama-transformers package; the tensors are the authors' tensors unchanged "
        "(conversion is a pure renaming), and the model code ships alongside (`trust_remote_code=True`). "
        "Original code: [techmonsterwang/iLLaMA](" + CODE_URL + ").",
    ]
    if source:
        out += ["", f"Converted from {source}."]
    out += ["", "## Results", ""]
    out += [
        "| model | top-1 (ImageNet-1K val) | params (exact) | MACs | resolution | pretraining data |",
        "|---|---|---|---|---|---|",
    ]
    if variant is not None:
        pretraining = f"{variant.pretraining}, then ImageNet-1K" if variant.pretraining else "ImageNet-1K"
        out.append(
            f"| {name} | {variant.top1:.1f} | {variant.num_parameters:,} | {variant.macs} | "
            f"{variant.resolution} | {pretraining} |"
        )
    else:
        params = f"{num_parameters:,}" if num_parameters is not None else "-"
        out.append(f"| {name} | not reported | {params} | - | {resolution} | unknown |")
    out += [
        "",
        "Top-1 and MACs are the paper's figures; the parameter count is the exact sum over the state dict "
        "(the paper's profiler skips the position table, class token and RMSNorm weights).",
    ]
    if variant is None and hidden_size is not None:
        out += [
            "",
            f"Architecture read from the checkpoint: hidden size {hidden_size}, {num_hidden_layers} blocks, "
            f"{num_labels} classes.",
        ]
    out += ["", *_model_details(name, variant, hidden_size, num_hidden_layers, resolution, num_parameters)]
    out += ["", *_usage(name, variant, hidden_size, num_hidden_layers, resolution)]
    out += [
        "",
        f"Evaluation preprocessing (`preprocessor_config.json`): {_eval_transform(resolution)}. "
        'Class order: the 1000 ImageNet-1K synsets sorted (n01440764 "tench" first).'
        if num_labels == 1000
        else f"Evaluation preprocessing (`preprocessor_config.json`): {_eval_transform(resolution)}.",
        "",
        "The model runs in its deployed state (soft mask rate 0: causal). The authors' mask multiplies the softmax "
        'output without renormalising; the converted model keeps that arithmetic (`mask_style="post_softmax"`), '
        "which the weights require.",
        "",
        "## License",
        "",
        WEIGHTS_LICENSE,
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return "\n".join(out)


def _architecture(variant: ReleasedVariant | None, hidden_size: int | None, num_hidden_layers: int | None):
    """(hidden size, depth, heads, patch) of the card's model: the variant's preset, else what the checkpoint says."""
    if variant is not None:
        from ..presets import load_preset

        config = load_preset(variant.preset)
        return config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.patch_size
    heads = hidden_size // 64 if hidden_size else None  # the conversion's rule for a size that is no preset
    return hidden_size, num_hidden_layers, heads, None


def _model_details(name, variant, hidden_size, num_hidden_layers, resolution, num_parameters) -> list[str]:
    """timm-style "Model Details": type, sizes, parameter count, GMACs, image size, papers, original code."""
    hidden, depth, heads, patch = _architecture(variant, hidden_size, num_hidden_layers)
    params = f"{num_parameters / 1e6:.1f}" if num_parameters is not None else "-"
    lines = [
        "## Model Details",
        "",
        "- **Model type:** image classification / feature backbone",
        "- **Model stats:**",
        f"  - Params (M): {params}",
    ]
    if variant is not None:
        lines.append(f"  - GMACs: {variant.macs.rstrip('G')} (the paper's figure)")
    lines += [
        f"  - Image size: {resolution} x {resolution}",
    ]
    if patch is not None:
        lines.append(f"  - Patch size: {patch}; tokens: {(resolution // patch) ** 2} patches + 1 class token (last)")
    if hidden is not None:
        lines.append(f"  - Width {hidden}, depth {depth}, heads {heads}")
    lines += [
        "- **Papers:** [Adapting LLaMA Decoder to Vision Transformer](" + PAPER_URL + ")",
        "- **Original:** [techmonsterwang/iLLaMA](" + CODE_URL + ")",
    ]
    if variant is not None:
        lines.append(
            "- **Dataset:** ImageNet-1K" + (f" (pretrained on {variant.pretraining})" if variant.pretraining else "")
        )
    return lines


def _usage(name, variant, hidden_size, num_hidden_layers, resolution) -> list[str]:
    """The card's snippets: each runs on a machine with Transformers only (the folder's own code, remote code)."""
    _, depth, _, patch = _architecture(variant, hidden_size, num_hidden_layers)
    depth = depth or 12
    indices = sorted({max(1, round(depth * k / 4)) for k in (1, 2, 3, 4)})
    grid = f"{resolution // patch}, {resolution // patch}" if patch else "H / patch, W / patch"
    model_dir = f'model_dir = "path/to/{name}"  # this folder, or its Hub repo id'
    return [
        "## Model Usage",
        "",
        "The model code ships in this folder: pass `trust_remote_code=True` to every `from_pretrained` and to "
        "`pipeline`.",
        "",
        "### Image classification",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        model_dir,
        'classifier = pipeline("image-classification", model=model_dir, trust_remote_code=True)',
        'print(classifier("cat.jpg", top_k=5))',
        "```",
        "",
        "```python",
        "import torch",
        "from PIL import Image",
        "from transformers import AutoImageProcessor, AutoModelForImageClassification",
        "",
        model_dir,
        "processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)",
        "model = AutoModelForImageClassification.from_pretrained(model_dir, trust_remote_code=True).eval()",
        'inputs = processor(Image.open("cat.jpg").convert("RGB"), return_tensors="pt")',
        "with torch.no_grad():",
        "    logits = model(**inputs).logits",
        "probabilities, indices = logits.softmax(-1)[0].topk(5)",
        "print([(model.config.id2label[i.item()], round(p.item(), 3)) for p, i in zip(probabilities, indices)])",
        "```",
        "",
        "### Feature map extraction",
        "",
        "`AutoBackbone.from_pretrained` takes the Hub repo id of this folder (Transformers reads a local path there "
        "as a timm model name); its feature maps are the patch tokens of the chosen blocks, the class token dropped.",
        "",
        "```python",
        "import torch",
        "from PIL import Image",
        "from transformers import AutoBackbone, AutoImageProcessor",
        "",
        f'repo_id = "your-name/{name}"  # the Hub repo holding this folder',
        "processor = AutoImageProcessor.from_pretrained(repo_id, trust_remote_code=True)",
        f"backbone = AutoBackbone.from_pretrained(repo_id, out_indices={indices}, trust_remote_code=True).eval()",
        'inputs = processor(Image.open("cat.jpg").convert("RGB"), return_tensors="pt")',
        "with torch.no_grad():",
        "    feature_maps = backbone(**inputs).feature_maps",
        f"print([tuple(f.shape) for f in feature_maps])  # (1, width, {grid}) per block",
        "```",
        "",
        "### Image embeddings",
        "",
        "```python",
        "import torch",
        "from PIL import Image",
        "from transformers import AutoImageProcessor, AutoModel",
        "",
        model_dir,
        "processor = AutoImageProcessor.from_pretrained(model_dir, trust_remote_code=True)",
        "model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()",
        'inputs = processor(Image.open("cat.jpg").convert("RGB"), return_tensors="pt")',
        "with torch.no_grad():",
        "    embedding = model(**inputs).pooler_output  # the final-normed class token, (1, width)",
        "print(embedding.shape)",
        "```",
    ]


def write_released_cards(output_dir: str | Path) -> list[Path]:
    """Write `<variant name>.md` for every released variant into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for variant in RELEASED_VARIANTS:
        path = output_dir / f"{variant.name}.md"
        path.write_text(render_card(variant.name, variant), encoding="utf-8")
        paths.append(path)
    return paths
