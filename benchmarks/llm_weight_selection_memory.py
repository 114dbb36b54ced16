"""Peak memory of LLaMA weight selection: a LLaMA-shaped bf16 checkpoint (D 1024, 12 layers, MLP 2816,
4 shards, 298 MiB) -> illama-tiny-224. Prints the process's anonymous-memory peak (sampled every 2 ms from
/proc/self/status RssAnon) and its peak resident set (VmHWM) before and during `init_model_from_llama`.

    python benchmarks/llm_weight_selection_memory.py      (Linux; about 20 s on 2 CPU cores)
"""

import json
import multiprocessing
import os
import tempfile
import threading
import time

import torch
from safetensors.torch import save_file

HIDDEN, LAYERS, MLP, VOCAB, SHARDS = 1024, 12, 2816, 1000, 4


def write_checkpoint(path: str) -> int:
    shapes = {
        "model.embed_tokens.weight": (VOCAB, HIDDEN),
        "lm_head.weight": (VOCAB, HIDDEN),
        "model.norm.weight": (HIDDEN,),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,)})
        shapes.update({p + f"self_attn.{n}_proj.weight": (HIDDEN, HIDDEN) for n in "qkvo"})
        shapes.update(
            {
                p + "mlp.gate_proj.weight": (MLP, HIDDEN),
                p + "mlp.up_proj.weight": (MLP, HIDDEN),
                p + "mlp.down_proj.weight": (HIDDEN, MLP),
            }
        )
    names, weight_map, total = list(shapes), {}, 0
    per_shard = -(-len(names) // SHARDS)
    generator = torch.Generator().manual_seed(0)
    for shard in range(SHARDS):
        file = f"model-{shard + 1:05d}-of-{SHARDS:05d}.safetensors"
        part = {
            n: (torch.randn(shapes[n], generator=generator) * 0.02).bfloat16()
            for n in names[shard * per_shard : (shard + 1) * per_shard]
        }
        total += sum(t.numel() * 2 for t in part.values())
        save_file(part, os.path.join(path, file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as handle:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, handle)
    with open(os.path.join(path, "config.json"), "w") as handle:
        json.dump(
            {
                "model_type": "llama",
                "hidden_size": HIDDEN,
                "intermediate_size": MLP,
                "num_hidden_layers": LAYERS,
                "num_attention_heads": 16,
                "num_key_value_heads": 16,
                "vocab_size": VOCAB,
            },
            handle,
        )
    return total


def status_mib(key: str) -> float:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) / 1024 for line in handle if line.startswith(key))


def main():
    from modeling_illama import ILlamaForImageClassification, load_preset
    from modeling_illama.llm.weight_selection import init_model_from_llama

    with tempfile.TemporaryDirectory() as path:
        writer = multiprocessing.get_context("spawn").Process(target=write_checkpoint, args=(path,))
        writer.start()  # in another process, so its buffers do not inflate this one's memory figures
        writer.join()
        with open(os.path.join(path, "model.safetensors.index.json")) as handle:
            size = json.load(handle)["metadata"]["total_size"]
        torch.manual_seed(0)
        model = ILlamaForImageClassification(load_preset("illama-tiny-224"))
        student = sum(p.numel() * p.element_size() for p in model.parameters())
        anon_before, hwm_before = status_mib("RssAnon:"), status_mib("VmHWM:")
        peak, done = [anon_before], threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], status_mib("RssAnon:"))
                time.sleep(0.002)

        sampler = threading.Thread(target=sample)
        sampler.start()
        start = time.perf_counter()
        report = init_model_from_llama(model, path)
        seconds = time.perf_counter() - start
        done.set()
        sampler.join()
        largest = max(torch.Size(r.teacher_shape).numel() * 2 for r in report.from_llm if len(r.sources) == 1)
        print(
            f"checkpoint {size / 2**20:.0f} MiB (bf16), student {student / 2**20:.1f} MiB (fp32), "
            f"largest single source tensor {largest / 2**20:.1f} MiB, {len(report.tensors_read)} tensors read in {seconds:.2f} s"
        )
        print(
            f"anonymous memory: {anon_before:.0f} MiB with the student built, peak {peak[0]:.0f} MiB during selection "
            f"(+{peak[0] - anon_before:.0f} MiB)"
        )
        print(f"peak resident set (VmHWM): {hwm_before:.0f} MiB before, {status_mib('VmHWM:'):.0f} MiB after")


if __name__ == "__main__":
    main()
