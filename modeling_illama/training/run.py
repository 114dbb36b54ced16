"""`train(recipe)`: one training run with everything `illama-train` does around `Trainer.train()`.

    from modeling_illama.training.recipes import load_recipe
    from modeling_illama.training.run import train

    recipe = load_recipe("cifar10-mini", {"num_train_epochs": 1}, output_dir="runs/notebook")
    run = train(recipe)
    run.extras["metrics"]["eval_top1"]

Around the training: the output folder is claimed (one run per folder, an existing model kept unless
`overwrite`), `recipe.json` records what the run computes (compared on `resume`), `train.log` keeps the log;
after it: the final model (or LoRA adapter, training/peft.py), the final evaluation, `all_results.json`,
`training_curves.png`, the model card and, with `push_to_hub`, the upload.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time

from .assembly import TrainingRun, distributed_state, save_final_model
from .output_dir import LOG_FILE, claim_output_dir, remove_run_outputs
from .recipes import Recipe
from .resume import check_resume_record, last_checkpoint
from .tasks import build_training

logger = logging.getLogger(__name__)


def train(
    recipe: Recipe,
    resume: bool = False,
    overwrite: bool = False,
    allow_changed_recipe: bool = False,
    plot: bool = True,
) -> TrainingRun:
    """Train `recipe` into `recipe.output_dir` and return the run; `run.extras["metrics"]` holds the final
    training and evaluation metrics (also in `all_results.json`).

    resume: continue from the newest complete checkpoint of the folder (its `recipe.json` must match the recipe
        unless `allow_changed_recipe`). overwrite: replace a run or model already in the folder.
    Raises ValueError / FileNotFoundError / FileExistsError for settings, data or folders it cannot use.
    """
    state = distributed_state()
    # one run per folder, never over an existing model unless `overwrite`; nothing is removed before every check
    lock = claim_output_dir(recipe.output_dir, overwrite=overwrite, resume=resume, state=state, remove=False)
    try:
        with _log_file(recipe.output_dir, state.is_main_process):
            return _train(recipe, state, resume, overwrite, allow_changed_recipe, plot)
    finally:
        if lock is not None:
            lock.release()


def _train(
    recipe: Recipe, state, resume: bool, overwrite: bool, allow_changed_recipe: bool, plot: bool
) -> TrainingRun:
    run, checkpoint = _prepare(recipe, state, resume, overwrite, allow_changed_recipe)
    start = time.time()
    result = run.trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(result.metrics, train_wall_seconds=time.time() - start)
    _save(run, recipe)
    if run.eval_data is not None:
        metrics.update(run.trainer.evaluate())
    logger.info(
        "rank %d/%d finished at optimizer step %d",
        state.process_index,
        state.num_processes,
        run.trainer.state.global_step,
    )
    run.trainer.save_metrics("all", metrics)
    run.trainer.save_state()
    run.extras["metrics"] = metrics
    if state.is_main_process:
        _write_reports(run, recipe, metrics, plot)
    if recipe.push_to_hub:
        run.trainer.push_to_hub(commit_message="illama-train: end of training")
    return run


def _prepare(recipe: Recipe, state, resume: bool, overwrite: bool, allow_changed_recipe: bool):
    """Every check, then the run built (and LoRA applied); only then a previous run is removed (`overwrite`) and
    `recipe.json` written. Returns (run, checkpoint to resume from or None)."""
    output_dir = recipe.output_dir
    record = recipe.recipe_dict()  # what the run computes: recipe, model, data (compared on resume)
    checkpoint = None
    if resume:
        checkpoint = last_checkpoint(output_dir)
        if checkpoint is None:
            raise FileNotFoundError(f"resume (--resume) given but {output_dir} holds no complete checkpoint-* folder")
        check_resume_record(output_dir, record, allow_changed_recipe, keep_previous=state.is_main_process)
        logger.info("resuming from %s", checkpoint)

    run = build_training(recipe)
    if recipe.peft:
        from .peft import apply_peft

        apply_peft(run, recipe)
    if state.is_main_process:
        if overwrite:  # every check passed: only now remove the previous run (its train.log lines are cut)
            remove_run_outputs(output_dir)
        with open(os.path.join(output_dir, "recipe.json"), "w") as handle:
            json.dump(record, handle, indent=2)
    model = run.trainer.model
    logger.info(
        "model: %s, %.2fM parameters (%.2fM trainable), data: %s, labels %s",
        recipe.model,
        sum(p.numel() for p in model.parameters()) / 1e6,
        sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
        recipe.dataset,
        run.train_data.label_names,
    )
    return run, checkpoint


def _write_reports(run: TrainingRun, recipe: Recipe, metrics: dict, plot: bool) -> None:
    """The final metrics in the log, `training_curves.png` and the model card (main process)."""
    logger.info("final metrics: %s", json.dumps(metrics, default=float))
    if plot:
        from .plots import plot_training_curves

        path = plot_training_curves(
            run.trainer.state.log_history, os.path.join(recipe.output_dir, "training_curves.png")
        )
        logger.info("training curves: %s", path)
    run.trainer.create_model_card()
    if recipe.peft and recipe.task == "image-classification":  # segmentation: the merged model is the result
        from .peft import write_adapter_card

        write_adapter_card(run, recipe)
    logger.info("model card: %s", os.path.join(recipe.output_dir, "README.md"))


def _save(run: TrainingRun, recipe: Recipe) -> None:
    """The final model: full weights, or the LoRA adapter (and, with peft.save_merged, the merged model)."""
    if not recipe.peft:
        save_final_model(run, recipe.output_dir)
        return
    from .peft import save_adapter

    save_adapter(run, recipe)


@contextlib.contextmanager
def _log_file(output_dir: str, is_main: bool):
    """`<output_dir>/train.log` receives this package's and Transformers' records during the run (main process).
    Trainer prints each log step on the console; its JSON copy (`modeling_illama.training.steps`) goes here only."""
    if not is_main:
        yield
        return
    from transformers.utils import logging as hf_logging

    os.makedirs(output_dir, exist_ok=True)
    handler = logging.FileHandler(os.path.join(output_dir, LOG_FILE))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package, steps, transformers_logger = (
        logging.getLogger("modeling_illama"),
        logging.getLogger("modeling_illama.training.steps"),
        hf_logging.get_logger(),
    )
    previous = steps.propagate, steps.level, package.level
    steps.propagate = False
    steps.setLevel(logging.INFO)
    if package.level == logging.NOTSET:  # a notebook: nothing configured, the file still gets the INFO records
        package.setLevel(logging.INFO)
    for target in (package, steps, transformers_logger):
        target.addHandler(handler)
    try:
        yield
    finally:
        for target in (package, steps, transformers_logger):
            target.removeHandler(handler)
        steps.propagate = previous[0]
        steps.setLevel(previous[1])
        package.setLevel(previous[2])
        handler.close()
