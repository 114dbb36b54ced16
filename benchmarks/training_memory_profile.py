#!/usr/bin/env python
"""What a training step holds between forward and backward: iLLaMA-T (package defaults) vs timm deit_tiny.

    python benchmarks/training_memory_profile.py            # ~1 min -> outputs/benchmarks/
    python benchmarks/training_memory_profile.py --update-results

One fp32 training forward (model.train(), the default "sdpa" backend and post_softmax_path="auto", r = 0) at
224 px batch 32 and 384 px batch 8, with `torch.autograd.graph.saved_tensors_hooks` recording every tensor
autograd keeps for backward: distinct storages, each charged to the innermost module running when it was first
saved (block index folded: "layers.*.mlp"). Saved bytes do not depend on the machine; the measured peak RSS of
the same step is what benchmarks/run_benchmark.py --attention-paths reports.
"""

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
RESULTS = HERE / "results" / "training_memory_profile.json"
SCRATCH = HERE.parent / "outputs" / "benchmarks" / "training_memory_profile.json"
CASES = {224: 32, 384: 8}

from modeling_illama.utils.machine import merge_result  # noqa: E402


def build(kind: str, image: int):
    if kind == "deit_tiny":
        import timm

        return timm.create_model("deit_tiny_patch16_224", pretrained=False, img_size=image)
    from modeling_illama import ILlamaForImageClassification, load_preset

    config = load_preset("illama-tiny-224", image_size=image)
    config._attn_implementation = "sdpa"
    return ILlamaForImageClassification(config)


def saved_by_module(model, pixels) -> dict[str, int]:
    """{folded module path: bytes of the distinct storages first saved while it ran} for one training forward."""
    stack, owners = [], {}
    names = {module: re.sub(r"\.\d+(\.|$)", r".*\1", name) or "(root)" for name, module in model.named_modules()}
    handles = []
    for module in model.modules():
        handles.append(module.register_forward_pre_hook(lambda m, a: stack.append(names[m])))
        handles.append(module.register_forward_hook(lambda m, a, o: stack.pop() and None))

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in owners and storage.nbytes():
            owners[storage.data_ptr()] = (stack[-1] if stack else "(outside modules)", storage.nbytes())
        return tensor

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        logits = model(pixel_values=pixels) if "ILlama" in type(model).__name__ else model(pixels)
        logits = logits.logits if hasattr(logits, "logits") else logits
        F.cross_entropy(logits, torch.zeros(len(pixels), dtype=torch.long)).backward()
    for handle in handles:
        handle.remove()
    totals = defaultdict(int)
    for owner, nbytes in owners.values():
        totals[owner] += nbytes
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def profile() -> dict:
    out = {}
    for image, batch in CASES.items():
        pixels = torch.randn(batch, 3, image, image, generator=torch.Generator().manual_seed(0))
        for kind in ("illama_tiny", "deit_tiny"):
            torch.manual_seed(0)
            model = build(kind, image)
            parameters = sum(p.numel() * p.element_size() for p in model.parameters())
            saved = saved_by_module(model, pixels)
            out[f"{kind}_{image}"] = {
                "image": image,
                "batch": batch,
                "parameter_mb": parameters / 2**20,
                "weights_grads_adamw_mb": 4 * parameters / 2**20,
                "saved_total_mb": sum(saved.values()) / 2**20,
                "saved_by_module_mb": {name: nbytes / 2**20 for name, nbytes in saved.items()},
            }
            print(f"  {kind} {image} px b{batch}: saved {out[f'{kind}_{image}']['saved_total_mb']:.0f} MB", flush=True)
    return out


def markdown(result: dict) -> str:
    lines = []
    for image, batch in CASES.items():
        ours, deit = result[f"illama_tiny_{image}"], result[f"deit_tiny_{image}"]
        lines += [
            f"#### {image} px, batch {batch}: saved for backward iLLaMA-T {ours['saved_total_mb']:.0f} MB, "
            f"deit_tiny {deit['saved_total_mb']:.0f} MB ({ours['saved_total_mb'] / deit['saved_total_mb']:.2f}x); "
            f"weights + grads + AdamW {ours['weights_grads_adamw_mb']:.0f} / {deit['weights_grads_adamw_mb']:.0f} MB",
            "",
            "| iLLaMA-T module | MB | deit_tiny module | MB |",
            "|---|---|---|---|",
        ]
        left, right = list(ours["saved_by_module_mb"].items()), list(deit["saved_by_module_mb"].items())
        for index in range(max(len(left), len(right))):
            a = left[index] if index < len(left) else ("", None)
            b = right[index] if index < len(right) else ("", None)
            cells = [f"`{a[0]}`" if a[0] else "", "" if a[1] is None else f"{a[1]:.1f}"]
            cells += [f"`{b[0]}`" if b[0] else "", "" if b[1] is None else f"{b[1]:.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update-results", action="store_true", help="merge into benchmarks/results/")
    parser.add_argument("--label", default="current", help="key of this profile in the results file")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    path = RESULTS if args.update_results else SCRATCH
    results = merge_result(path, args.label, profile())
    text = "\n".join(f"### {label}\n\n{markdown(result)}" for label, result in results.items())
    path.with_suffix(".md").write_text(text)
    print(markdown(results[args.label]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
