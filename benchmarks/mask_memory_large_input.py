"""Memory of the soft mask at a large input: a 224 px model (patch 16) run at 2048 x 2048 with
`interpolate_pos_encoding` (16,385 tokens, so M would be 16,385^2 fp32 = 1 GiB), CPU, r = 0.37, in inference
(no autograd) and in training (forward + backward).

Each case runs in its own process and reports the peak resident set (VmHWM) added by one forward (and backward)
and the anonymous memory still held after it (a mask cached on the model would stay there):
- "mask_built": false: post-softmax attention on "sdpa" takes r as a number and its paths
  (fused_attention_illama) need no N x N mask, so none is built, with or without gradients;
- "mask_built": true: the same call with the N x N mask M built beside it (`soft_attention_mask`), i.e. what a
  path that reads M adds; the model keeps no mask, so it is freed after the call either way.
The model is tiny (width 32, 1 block, 1 head) so that the mask, not the activations, dominates. In training,
`forward_seconds` covers the forward and the backward.

    python benchmarks/mask_memory_large_input.py     (Linux; writes benchmarks/results/mask_memory_large_input.json)
"""

import json
import multiprocessing
import os
import platform
import subprocess
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "mask_memory_large_input.json")
SIZE = 2048


def status_mib(key: str) -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith(key))


def run_case(force_mask: bool, training: bool, queue) -> None:
    import torch

    from modeling_illama import ILlamaForImageClassification, load_preset
    from modeling_illama.fused_attention_illama import soft_attention_mask

    torch.manual_seed(0)
    config = load_preset(
        "illama-tiny-224", hidden_size=32, num_attention_heads=1, num_hidden_layers=1, intermediate_size=64
    )
    model = ILlamaForImageClassification(config).train(training)
    model.set_soft_mask_rate(0.37)
    pixels = torch.randn(1, 3, SIZE, SIZE)
    anon_before, hwm_before = status_mib("RssAnon:"), status_mib("VmHWM:")
    start = time.perf_counter()
    mask = soft_attention_mask((SIZE // 16) ** 2 + 1, 0.37, "post_softmax", torch.float32) if force_mask else None
    with torch.set_grad_enabled(training):
        logits = model(pixel_values=pixels, interpolate_pos_encoding=True).logits
        if training:
            logits.sum().backward()
    seconds = time.perf_counter() - start
    del mask
    cached = [name for name, value in vars(model.illama).items() if torch.is_tensor(value)] or None
    queue.put(
        {
            "mask_built": force_mask,
            "mode": "training (forward + backward)" if training else "inference (no_grad)",
            "tokens": (SIZE // 16) ** 2 + 1,
            "peak_rss_added_mib": round(status_mib("VmHWM:") - hwm_before, 1),
            "anon_memory_held_after_mib": round(status_mib("RssAnon:") - anon_before, 1),
            "mask_cached_after_call": cached,
            "forward_seconds": round(seconds, 2),
        }
    )


def main():
    context = multiprocessing.get_context("spawn")
    results = []
    for training, force_mask in [(False, False), (False, True), (True, False), (True, True)]:
        queue = context.Queue()
        process = context.Process(target=run_case, args=(force_mask, training, queue))
        process.start()
        results.append(queue.get())
        process.join()
        print(results[-1])
    record = {
        "cases": results,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "cpu": next(
            (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
            platform.processor(),
        ),
        "note": "shared machine: other jobs were running; memory figures do not depend on load, seconds do",
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as handle:
        json.dump(record, handle, indent=2)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
