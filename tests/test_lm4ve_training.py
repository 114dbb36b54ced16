"""illama-train for the ViT-with-frozen-LLaMA family (Pang et al.): a real Trainer run with repeated augmentation
and the per-epoch DeiT schedule, the schedule against timm's own scheduler, the drop-path of the ViT variant,
and training from a saved ViT/DeiT folder."""

import json
import math

import pytest
import torch
import yaml
from huggingface_hub.errors import StrictDataclassClassValidationError
from llama_checkpoint import read_all_tensors, save_tiny_llama
from tiny_data import TINY_RUN_FIELDS, write_tiny_image_splits
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification
from transformers.models.vit.modeling_vit import ViTLayer

from modeling_illama import ViTWithFrozenLLMConfig, ViTWithFrozenLLMForImageClassification
from modeling_illama.configuration import configuration_files
from modeling_illama.loading import MissingWeightsError
from modeling_illama.training.assembly import save_final_model
from modeling_illama.training.optim import deit_epoch_lr
from modeling_illama.training.recipes import load_recipe, recipe_from_dict
from modeling_illama.training.tasks import build_training
from modeling_illama.training.vit_frozen_llm import build_vit_frozen_llm_model

TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny_llama(
        tmp_path_factory.mktemp("llama"), hidden_size=48, intermediate_size=96, num_hidden_layers=2, vocab_size=32
    )


def vit_fields(**changes):
    """The lm4ve-vit-tiny recipe's fields, scaled down to 16 px images and a 3-block, 32-wide ViT."""
    fields = yaml.safe_load(configuration_files("recipes")["lm4ve-vit-tiny"].read_text())
    fields.pop("description")
    fields.update(
        TINY_RUN_FIELDS,
        model_overrides={**TINY_VIT, "patch_size": 8},
        image_size=16,
        train_examples=None,
        num_train_epochs=3,
        fp16=False,
        model_ema=False,
        save_strategy="no",
    )
    fields.update(changes)
    return fields


def vit_recipe(**changes):
    return recipe_from_dict(vit_fields(**changes))


def test_lm4ve_recipes_carry_the_authors_hyper_parameters():
    for size, width in (("tiny", 192), ("small", 384), ("base", 768)):
        recipe = load_recipe(f"lm4ve-vit-{size}")
        assert recipe.model == f"vit-{size}" and recipe.model_family == "vit_frozen_llm"
        assert (recipe.global_batch_size, recipe.learning_rate, recipe.num_train_epochs, recipe.warmup_epochs) == (
            1024,
            1e-3,
            300,
            20,
        )
        assert recipe.learning_rate == pytest.approx(5e-4 * 1024 / 512)
        assert (recipe.warmup_lr, recipe.lr_scheduler_kwargs["min_lr"], recipe.lr_schedule_unit) == (
            1e-6,
            1e-5,
            "epoch",
        )
        assert recipe.model_ema and recipe.model_ema_decay == 0.99996 and not recipe.model_ema_eval  # kept, not used
        assert recipe.repeated_augmentation == 3 and recipe.fp16 and recipe.drop_path_rate == 0.1
        assert recipe.frozen_llm_rms_norm_eps == 1e-6 and recipe.soft_mask == "none"
        from modeling_illama.training.vit_frozen_llm import VIT_SIZES

        assert VIT_SIZES[recipe.model]["hidden_size"] == width


def test_epoch_schedule_matches_timm_scheduler_stepped_as_deit_does():
    """DeiT builds timm's CosineLRScheduler, trains epoch e, then calls step(e): replay that loop."""
    from timm.scheduler import CosineLRScheduler

    base, epochs, warmup = 1e-3, 30, 5
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    scheduler = CosineLRScheduler(optimizer, t_initial=epochs, lr_min=1e-5, warmup_lr_init=1e-6, warmup_t=warmup)
    used = []
    for epoch in range(epochs):
        used.append(optimizer.param_groups[0]["lr"])  # the lr of every step of this epoch
        scheduler.step(epoch)
    ours = [deit_epoch_lr(e, base, 1e-5, 1e-6, warmup, epochs) for e in range(epochs)]
    assert ours == pytest.approx(used, rel=1e-12, abs=0)
    assert ours[0] == ours[1] == 1e-6
    # no warm-up prefix: the first cosine value is already t = warmup of the 30-epoch cosine, never lr itself
    assert max(ours) == pytest.approx(1e-5 + 0.5 * (base - 1e-5) * (1 + math.cos(math.pi * warmup / epochs)))


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, llama_dir):
    data = write_tiny_image_splits(tmp_path_factory.mktemp("data"), n_test=6)
    out = tmp_path_factory.mktemp("run")
    recipe = vit_recipe(
        frozen_llm=llama_dir, frozen_llm_layers=[1], dataset=str(data), output_dir=str(out), model_ema=True
    )
    run = build_training(recipe)
    model = run.trainer.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    run.trainer.train()
    save_final_model(run, out)
    return run, before, out


def test_vit_frozen_llm_trains_through_trainer(vit_run, llama_dir):
    run, before, out = vit_run
    model = run.trainer.model
    assert isinstance(model, ViTWithFrozenLLMForImageClassification)
    assert [layer.drop_path.drop_prob for layer in model.vit.layers] == pytest.approx([0.0, 0.05, 0.1])
    settings = model.config.frozen_llm
    assert settings.layer_indices == [1] and settings.rms_norm_eps == 1e-6
    after = dict(model.named_parameters())
    llama = read_all_tensors(llama_dir)
    for name, value in before.items():
        if ".frozen_llm.layers." in name:  # frozen and equal to the checkpoint's tensor
            assert torch.equal(after[name], value) and not after[name].requires_grad, name
            source = "model.layers.1." + name.split(".frozen_llm.layers.0.")[1]
            assert torch.equal(after[name], llama[source]), name
        elif name.endswith("classifier.weight") or "input_projection" in name or "layers.0.attention" in name:
            assert not torch.equal(after[name], value), name  # adapters, head and first block trained

    # 24 images, RepeatAugSampler keeps ceil(24 / 1) = 24 per epoch; 4 per micro-batch, accumulation 2
    sampler = run.trainer.get_train_dataloader().batch_sampler.sampler
    assert type(sampler).__name__ == "RepeatAugSampler" and sampler.num_repeats == 3 and len(sampler) == 24
    order = list(iter(sampler))
    assert all(order.count(i) <= 3 for i in set(order)) and max(order.count(i) for i in set(order)) == 3
    assert run.steps_per_epoch == 3 and run.trainer.state.global_step == 9

    logs = [entry for entry in run.trainer.state.log_history if "loss" in entry]
    expected = [deit_epoch_lr(step // 3, 1e-3, 1e-5, 1e-6, 1, 3) for step in range(9)]
    assert [entry["learning_rate"] for entry in logs] == pytest.approx(expected)
    assert "soft_mask_rate" not in logs[0]
    groups = run.trainer.optimizer.param_groups  # DeiT: no weight decay on 1-D params, position table, class token
    no_decay = {id(p) for group in groups if group["weight_decay"] == 0.0 for p in group["params"]}
    assert id(model.vit.embeddings.position_embeddings) in no_decay and id(model.vit.embeddings.cls_token) in no_decay
    assert id(model.vit.layers[0].attention.q_proj.weight) not in no_decay
    assert sum("eval_top1" in entry for entry in run.trainer.state.log_history) == 3

    # EMA as the authors keep it (decay 0.99996, not evaluated): it follows the trained weights a little
    assert run.ema is not None and run.ema.decay == 0.99996 and not run.trainer.args.model_ema_eval
    ema = dict(run.ema.ema.module.named_parameters())
    head = "classifier.weight"
    moved = (after[head] - before[head]).detach()
    # 9 updates of weight 1 - 0.99996 each: the EMA has moved by about 9 * 4e-5 of the way the weights went
    assert 0 < (ema[head] - before[head]).abs().max() < moved.abs().max() / 100
    frozen = next(name for name in ema if ".frozen_llm.layers." in name)
    assert torch.equal(ema[frozen], after[frozen])


def test_saved_vit_frozen_llm_reloads_identically(vit_run):
    run, _, out = vit_run
    reloaded = AutoModelForImageClassification.from_pretrained(str(out)).eval()
    assert isinstance(reloaded, ViTWithFrozenLLMForImageClassification)
    assert json.loads((out / "config.json").read_text())["drop_path_rate"] == 0.1
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = run.trainer.model.eval()(pixel_values=pixels).logits
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, expected, rtol=0, atol=0)
    run.trainer.create_model_card()  # the card says what the model is, not "an iLLaMA"
    card = (out / "README.md").read_text()
    assert "ViT/DeiT image classifier with frozen LLaMA layer(s)" in card and "2310.12973" in card
    assert "- frozen-llm" in card and "- illama" not in card and "iLLaMA image classifier" not in card


def test_drop_path_schedule_and_branches():
    config = ViTWithFrozenLLMConfig(**TINY_VIT, image_size=16, patch_size=8, num_labels=3, drop_path_rate=0.3)
    config.num_hidden_layers = 4
    torch.manual_seed(0)
    model = ViTWithFrozenLLMForImageClassification(config)
    rates = [layer.drop_path.drop_prob for layer in model.vit.layers]
    assert rates == torch.linspace(0, 0.3, 4).tolist()  # timm: [x.item() for x in torch.linspace(0, rate, depth)]

    layer = model.vit.layers[3]
    reference = ViTLayer(config)
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(400, 5, 32)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), reference(x))  # no drop path at evaluation
        # training: each sample takes each residual branch with probability 0.7, scaled by 1 / 0.7
        layer.train()
        torch.manual_seed(1)
        out = layer(x)
        attention = reference.attention(reference.layernorm_before(x))[0]
        keep = 0.7
        kept_attention = x + attention / keep
        candidates = []
        for h in (x, kept_attention):
            mlp = reference.mlp(reference.layernorm_after(h))
            candidates += [h, h + mlp / keep]
        distance = torch.stack([(out - c).abs().amax(dim=(1, 2)) for c in candidates], dim=1)
        choice = distance.argmin(dim=1)
        assert distance.min(dim=1).values.max() < 1e-5  # every sample is exactly one of the four combinations
        counts = torch.bincount(choice, minlength=4).float() / len(choice)
        expected = torch.tensor([0.3 * 0.3, 0.3 * 0.7, 0.7 * 0.3, 0.7 * 0.7])
        assert (counts - expected).abs().max() < 0.08
    with pytest.raises(StrictDataclassClassValidationError, match="drop_path_rate must lie in"):
        ViTWithFrozenLLMConfig(drop_path_rate=1.0)


def test_from_a_pretrained_vit_folder(tmp_path, llama_dir):
    torch.manual_seed(0)
    fields = dict(TINY_VIT, image_size=16, patch_size=8, num_labels=3)
    vit = ViTForImageClassification(ViTConfig(**fields, id2label={0: "a", 1: "b", 2: "c"}, label2id={}))
    vit.save_pretrained(tmp_path / "deit")
    recipe = vit_recipe(frozen_llm=llama_dir, frozen_llm_rms_norm_eps=None, drop_path_rate=0.2, image_size=None)
    net = build_vit_frozen_llm_model(str(tmp_path / "deit"), recipe, ["x", "y"])
    assert isinstance(net, ViTWithFrozenLLMForImageClassification) and net.config.drop_path_rate == 0.2
    assert net.config.frozen_llm.layer_indices == [1]  # the last layer by default
    assert net.config.frozen_llm.rms_norm_eps == 1e-5  # null: the checkpoint's own eps
    assert net.classifier.weight.shape == (2, 32) and net.config.id2label == {0: "x", 1: "y"}
    for name, value in vit.state_dict().items():
        if not name.startswith("classifier"):
            assert torch.equal(net.state_dict()[name], value), name  # the backbone is the saved ViT's

    plain = build_vit_frozen_llm_model(
        str(tmp_path / "deit"), vit_recipe(frozen_llm=None, image_size=None), ["a", "b", "c"]
    )
    assert plain.config.frozen_llm is None and torch.equal(plain.classifier.weight, vit.classifier.weight)
    with pytest.raises(ValueError, match="neither a saved folder nor a ViT size"):
        build_vit_frozen_llm_model("vit-huge", vit_recipe(), ["a"])
    with pytest.raises(ValueError, match="no soft mask"):
        vit_recipe(soft_mask="constant")
    with pytest.raises(ValueError, match="no trainer for task 'image-classification' with model family 'convnext'"):
        build_training(vit_recipe(model_family="convnext"))

    # a folder missing a backbone tensor is refused (it would be random), not trained silently
    from safetensors.torch import load_file, save_file

    weights = tmp_path / "deit" / "model.safetensors"
    state = load_file(weights)
    dropped = next(name for name in state if ".1." in name and name.endswith("weight"))  # a block-1 weight
    del state[dropped]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(MissingWeightsError, match="missing"):
        build_vit_frozen_llm_model(
            str(tmp_path / "deit"), vit_recipe(frozen_llm=None, image_size=None), ["a", "b", "c"]
        )


def test_ddp_repeated_augmentation_two_cpu_processes(tmp_path, llama_dir):
    """Two real processes (gloo): the rank-aware RepeatAugSampler gives each rank its own 12 of the 24 images per
    epoch (3 micro-batches of 4), so both ranks take 3 optimizer steps per epoch; a loader sharded a second time
    by accelerate would give them fewer."""
    import subprocess
    import sys

    from test_training_launch import REPO, environment, free_port

    data = write_tiny_image_splits(tmp_path, n_test=6)
    recipe = vit_fields(frozen_llm=llama_dir, num_train_epochs=2, eval_strategy="no")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--main_process_port", str(free_port())]
    command += [str(REPO / "scripts" / "train.py"), "--recipe", str(tmp_path / "recipe.yaml"), "--dataset", str(data)]
    command += ["--output-dir", str(tmp_path / "out"), "--no-plot"]
    result = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for rank in (0, 1):
        assert f"[rank {rank}/2] finished at optimizer step 6" in result.stdout
    state = json.loads((tmp_path / "out" / "trainer_state.json").read_text())
    rates = [entry["learning_rate"] for entry in state["log_history"] if "loss" in entry]
    assert rates == pytest.approx([deit_epoch_lr(step // 3, 1e-3, 1e-5, 1e-6, 1, 2) for step in range(6)])


def test_illama_train_cli_guards_and_resumes_the_vit_family(tmp_path, llama_dir, capsys):
    """The output-folder guard, the resume record check and resume itself hold for this family: a second run into
    the folder is refused, a changed learning rate on resume is refused, and resuming from the epoch-2 checkpoint
    runs only epoch 3, at that epoch's rate of the per-epoch DeiT schedule."""
    import shutil

    from modeling_illama.cli.train import main as train_main

    data = write_tiny_image_splits(tmp_path / "data", n_test=6)
    fields = vit_fields(frozen_llm=llama_dir, num_train_epochs=3, eval_strategy="no", save_strategy="epoch")
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(fields))
    out = tmp_path / "out"
    argv = ["--recipe", str(tmp_path / "recipe.yaml"), "--dataset", str(data), "--output-dir", str(out), "--no-plot"]
    assert train_main(argv) == 0
    assert (out / "checkpoint-6").is_dir() and (out / "checkpoint-9").is_dir()
    capsys.readouterr()

    assert train_main(argv) == 2  # the folder holds a run: refused, nothing touched
    assert "already holds a training run or model" in capsys.readouterr().err

    shutil.rmtree(out / "checkpoint-9")  # as if killed during epoch 3
    assert train_main(argv + ["--resume", "learning_rate=0.01"]) == 2
    assert "learning_rate: 0.001 -> 0.01" in capsys.readouterr().err

    assert train_main(argv + ["--resume"]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [(entry["step"], entry["learning_rate"]) for entry in state["log_history"] if "loss" in entry]
    assert state["global_step"] == 9 and [step for step, _ in logged] == list(range(1, 10))  # 1-6 not run again
    expected = [deit_epoch_lr(epoch, 1e-3, 1e-5, 1e-6, 1, 3) for epoch in (0, 0, 0, 1, 1, 1, 2, 2, 2)]
    assert [rate for _, rate in logged] == pytest.approx(expected)
    assert expected[-1] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * 1.5)  # cos(pi / 3) = 0.5
