"""One arm of the ablation, in its own process: train with `illama-train`'s entry point, then evaluate and measure.

    python -m experiments.ablation.train_arm --output-dir DIR --dataset data/cifar10-mini --eval-rate 0 \\
        [--class-first] -- --recipe cifar10-mini key=value ...

Writes DIR/arm_result.json: test top-1 at the arm's deployed soft-mask rate (0 = causal; the bidirectional
arm is evaluated at r = 1), per-layer attention rank, the training log and this process's CPU time.
"""

import argparse
import json
import os
import resource
import sys
import time

import torch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--eval-rate", type=float, required=True, help="soft-mask rate for the test evaluation")
    parser.add_argument("--class-first", action="store_true", help="class token FIRST (experiment-only subclass)")
    parser.add_argument("--rank-images", type=int, default=64, help="test images for the attention rank")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then illama-train arguments")
    args = parser.parse_args(argv)
    if args.train_args[:1] == ["--"]:
        args.train_args = args.train_args[1:]
    return args


def model_class(class_first: bool):
    if class_first:
        from .class_first import ILlamaClassFirstForImageClassification

        return ILlamaClassFirstForImageClassification
    from modeling_illama import ILlamaForImageClassification

    return ILlamaForImageClassification


def train(args) -> int:
    """illama-train's main(); for the class-first arm the trainer builds the subclass instead."""
    import modeling_illama
    from modeling_illama.cli import train as train_cli

    cls = model_class(args.class_first)
    modeling_illama.ILlamaForImageClassification = cls  # build_model imports the class from the package
    argv = [*args.train_args, "--dataset", args.dataset, "--output-dir", args.output_dir, "--no-plot"]
    return train_cli.main(argv)


def evaluate(args, cls) -> dict:
    from torch.utils.data import DataLoader
    from transformers import AutoImageProcessor

    from modeling_illama.training.data import collate_images, load_image_dataset, with_transform
    from modeling_illama.training.evaluation import evaluate_model

    from .attention_rank import attention_rank_per_layer

    net = cls.from_pretrained(args.output_dir, dtype=torch.float32)
    if type(net.illama.embeddings).__name__ != (
        "ILlamaClassFirstEmbeddings" if args.class_first else "ILlamaEmbeddings"
    ):
        raise RuntimeError(f"unexpected embeddings {type(net.illama.embeddings).__name__} for this arm")
    net.set_soft_mask_rate(args.eval_rate)
    processor = AutoImageProcessor.from_pretrained(args.output_dir)
    data = load_image_dataset(args.dataset, "test", False, None, None, shuffle=False)
    transformed = with_transform(data, lambda image: processor(image, return_tensors="pt")["pixel_values"][0])
    loader = DataLoader(transformed, batch_size=64, collate_fn=collate_images)
    metrics = evaluate_model(net, loader, "cpu", None, len(data.dataset))
    first = next(iter(DataLoader(transformed, batch_size=args.rank_images, collate_fn=collate_images)))
    ranks = attention_rank_per_layer(net, first["pixel_values"])
    return {"test": metrics, "attention_rank": ranks}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.time()
    status = train(args)
    if status:
        return status
    train_wall = time.time() - start
    result = evaluate(args, model_class(args.class_first))
    with open(os.path.join(args.output_dir, "trainer_state.json")) as f:
        log_history = json.load(f)["log_history"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.update(
        log_history=log_history,
        eval_rate=args.eval_rate,
        class_first=args.class_first,
        train_args=args.train_args,
        train_wall_seconds=train_wall,
        wall_seconds=time.time() - start,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        torch_threads=torch.get_num_threads(),
    )
    with open(os.path.join(args.output_dir, "arm_result.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"arm done: test top-1 {100 * result['test']['top1']:.2f}% cpu {result['cpu_seconds']:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
