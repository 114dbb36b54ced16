"""`illama-train`: train or fine-tune an iLLaMA classifier with a recipe (Trainer; accelerate for several processes).

A recipe is a YAML file of `ILlamaTrainingArguments` fields: every `TrainingArguments` field plus the iLLaMA ones
(model, data, augmentation, soft mask, EMA, layer decay). `key=value` arguments override any of them.

    illama-train --recipe cifar10-mini --output-dir runs/demo
    illama-train --recipe cifar10-mini --output-dir runs/demo report_to=tensorboard num_train_epochs=5
    accelerate launch --num_processes 8 scripts/train.py --recipe illama-tiny-in1k --streaming \\
        --output-dir runs/tiny bf16=true
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from transformers.utils import logging as hf_logging

from ._common import make_parser, missing_model_folder, missing_train_extra, one_line_errors, user_error

logger = logging.getLogger("modeling_illama")
PROG = "illama-train"


def build_parser() -> argparse.ArgumentParser:
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--recipe", required=True, help="recipe name (see list_recipes()) or YAML file")
    parser.add_argument(
        "--model",
        help="preset name (train from scratch) or saved model folder (fine-tune); default: the recipe's `model`",
    )
    parser.add_argument(
        "--backbone",
        help="semantic-segmentation: start the backbone from this iLLaMA folder (trained or converted classifier); "
        "default: the recipe's `backbone`",
    )
    parser.add_argument(
        "--dataset", help="Hub id, local image folder, parquet folder or file; default: the recipe's `dataset`"
    )
    parser.add_argument("--eval-dataset", help="evaluation data when it lives elsewhere (default: --dataset)")
    parser.add_argument("--streaming", action="store_true", help="stream the training split (IterableDataset)")
    parser.add_argument("--image-column", help="image column (default: auto-detected)")
    parser.add_argument("--label-column", help="label column (default: auto-detected)")
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="checkpoints, logs and the final model")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run or model already in --output-dir (only files a training run writes are removed)",
    )
    parser.add_argument(
        "--allow-changed-recipe",
        action="store_true",
        help="with --resume: accept another data set, model or recipe than the run's recipe.json",
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write training_curves.png")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="recipe / TrainingArguments field overrides, e.g. num_train_epochs=10 report_to=tensorboard",
    )
    return parser


def command_line_fields(args: argparse.Namespace) -> dict:
    """The flags that are recipe fields, as overrides (they come from the command line)."""
    fields = {
        "model": args.model,
        "backbone": args.backbone,
        "dataset": args.dataset,
        "eval_dataset": args.eval_dataset,
        "image_column": args.image_column,
        "label_column": args.label_column,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    if args.streaming:
        fields["streaming"] = True
    return fields


def setup_logging(output_dir: str, is_main: bool) -> None:
    """Console + `<output_dir>/train.log` for this package and transformers (main process only writes the file)."""
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(formatter)
    package = logging.getLogger("modeling_illama")
    package.addHandler(console)
    package.propagate = False
    level = logging.INFO if is_main else logging.WARNING
    package.setLevel(level)
    hf_logging.set_verbosity(level)  # transformers keeps its own console handler
    if is_main:
        os.makedirs(output_dir, exist_ok=True)
        to_file = logging.FileHandler(os.path.join(output_dir, "train.log"))
        to_file.setFormatter(formatter)
        package.addHandler(to_file)
        hf_logging.get_logger().addHandler(to_file)
    # Trainer prints each log step on the console already: its JSON copy goes to train.log only.
    steps = logging.getLogger("modeling_illama.training.steps")
    steps.propagate = False
    steps.setLevel(level)
    if is_main:
        steps.addHandler(to_file)


@one_line_errors(PROG)
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if missing := missing_train_extra():
        return user_error(PROG, missing)
    if args.model and (missing := missing_model_folder(args.model)):
        return user_error(PROG, missing)
    from modeling_illama.training.assembly import distributed_state
    from modeling_illama.training.output_dir import claim_output_dir

    state = distributed_state()
    try:  # one run per folder, and never over an existing model unless --overwrite
        lock = claim_output_dir(args.output_dir, args.overwrite, args.resume, state, remove=False)  # checks only
    except (OSError, RuntimeError) as error:
        return user_error(PROG, error)
    try:
        return train(args, state)
    finally:
        if lock is not None:
            lock.release()


def train(args: argparse.Namespace, state) -> int:
    from modeling_illama.labels import LabelError
    from modeling_illama.training.recipes import load_recipe, parse_overrides
    from modeling_illama.training.resume import check_resume_record

    setup_logging(args.output_dir, state.is_main_process)
    try:
        overrides = {**parse_overrides(args.overrides), **command_line_fields(args)}
        recipe = load_recipe(args.recipe, overrides, output_dir=args.output_dir)
    except (FileNotFoundError, ValueError) as error:
        return user_error(PROG, error)
    record = recipe.recipe_dict()  # what the run computes: recipe, model, data (compared on --resume)

    from modeling_illama.training.assembly import save_final_model
    from modeling_illama.training.resume import last_checkpoint
    from modeling_illama.training.tasks import build_training

    resume = None
    if args.resume:
        resume = last_checkpoint(args.output_dir)
        if resume is None:
            return user_error(PROG, f"--resume given but {args.output_dir} holds no complete checkpoint-* folder")
        try:
            check_resume_record(
                args.output_dir, record, args.allow_changed_recipe, keep_previous=state.is_main_process
            )
        except ValueError as error:
            return user_error(PROG, error)
        logger.info("resuming from %s", resume)

    try:
        run = build_training(recipe)
    except (FileNotFoundError, ValueError) as error:  # bad data, columns, preset or schedule settings
        return user_error(PROG, error)
    if state.is_main_process:
        if args.overwrite:  # every check passed: only now remove the previous run
            from modeling_illama.training.output_dir import remove_run_outputs

            remove_run_outputs(args.output_dir)
        with open(os.path.join(args.output_dir, "recipe.json"), "w") as f:
            json.dump(record, f, indent=2)
    logger.info(
        "model: %s, %.2fM parameters, data: %s, labels %s",
        recipe.model,
        sum(p.numel() for p in run.trainer.model.parameters()) / 1e6,
        recipe.dataset,
        run.train_data.label_names,
    )

    start = time.time()
    try:
        result = run.trainer.train(resume_from_checkpoint=resume)
    except LabelError as error:  # a bad label in streamed data, found as it arrives
        return user_error(PROG, error)
    train_seconds = time.time() - start
    save_final_model(run, args.output_dir)
    metrics = dict(result.metrics, train_wall_seconds=train_seconds)
    if run.eval_data is not None:
        metrics.update(run.trainer.evaluate())
    print(
        f"[rank {state.process_index}/{state.num_processes}] finished at optimizer step "
        f"{run.trainer.state.global_step}",
        flush=True,
    )
    run.trainer.save_metrics("all", metrics)
    run.trainer.save_state()
    if state.is_main_process:
        logger.info("final metrics: %s", json.dumps(metrics, default=float))
        if not args.no_plot:
            from modeling_illama.training.plots import plot_training_curves

            path = plot_training_curves(
                run.trainer.state.log_history, os.path.join(args.output_dir, "training_curves.png")
            )
            logger.info("training curves: %s", path)
        run.trainer.create_model_card()
        logger.info("model card: %s", os.path.join(args.output_dir, "README.md"))
    if recipe.push_to_hub:
        run.trainer.push_to_hub(commit_message="illama-train: end of training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
