"""Training-time features on CPU: activation checkpointing, bf16, torch.compile, stochastic depth, AdamW."""

import os

import pytest
import torch
from tiny_models import tiny_illama_config

from modeling_illama import ILlamaForImageClassification


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return ILlamaForImageClassification(tiny_illama_config(**{"soft_mask_rate": 0.37, **overrides}))


def batch(size=4, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 32, 32, generator=gen), torch.randint(0, 5, (size,), generator=gen)


def loss_and_grads(model, pixels, labels):
    model.zero_grad()
    loss = model(pixels, labels=labels).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_activation_checkpointing_gives_the_same_loss_and_grads_and_recomputes(backend):
    model = make_model().train()
    model.set_attn_implementation(backend)
    pixels, labels = batch()
    calls = []
    # a PRE-hook: torch's non-reentrant recompute stops early, right after the last tensor backward needs
    model.illama.layers[0].mlp.register_forward_pre_hook(lambda *args: calls.append(1))
    loss, grads = loss_and_grads(model, pixels, labels)
    assert len(calls) == 1
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.illama.layers)
    calls.clear()
    loss_ckpt, grads_ckpt = loss_and_grads(model, pixels, labels)
    assert len(calls) == 2  # the block really was recomputed during backward
    assert torch.allclose(loss_ckpt, loss, atol=1e-6, rtol=0)
    for name, grad in grads.items():
        assert torch.allclose(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5), name


def test_bf16_autocast_on_cpu_runs_forward_and_backward_close_to_fp32():
    model = make_model().eval()
    pixels, labels = batch()
    with torch.no_grad():
        reference = model(pixels).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixels, labels=labels)
    assert out.logits.dtype == torch.bfloat16
    assert (out.logits.float() - reference).abs().max() <= 0.05 * reference.abs().max() + 0.02
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("backend", ["eager", "sdpa"])
def test_bf16_weights_run_on_both_backends(backend):
    model = make_model().eval()
    pixels, _ = batch()
    with torch.no_grad():
        reference = model(pixels).logits
        model = model.to(torch.bfloat16)
        model.set_attn_implementation(backend)
        logits = model(pixels).logits  # float32 pixels are cast to the weights' dtype
        cos, sin = model.illama.rotary_emb(17)
    assert logits.dtype == torch.bfloat16
    assert cos.dtype == sin.dtype == torch.float32  # spec: the rotary table stays float32
    assert torch.equal(model.illama.rotary_emb.cos, make_model().illama.rotary_emb.cos)  # not a bf16 round trip
    assert (logits.float() - reference).abs().max() <= 0.05 * reference.abs().max() + 0.02


def test_torch_compile_traces_the_whole_model_to_the_same_outputs():
    """Dynamo over the whole classifier (aot_eager backend: full graph capture, no slow C++ codegen)."""
    model = make_model().eval()
    pixels, _ = batch()
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        assert torch.allclose(compiled(pixels).logits, model(pixels).logits, atol=1e-6, rtol=0)
        assert torch.allclose(
            compiled(pixels, output_hidden_states=True).hidden_states[-1],
            model(pixels, output_hidden_states=True).hidden_states[-1],
            atol=1e-6,
            rtol=0,
        )


def test_inductor_compiled_layer_matches_eager_layer():
    model = make_model().eval()
    layer, base = model.illama.layers[0], model.illama
    hidden = torch.randn(2, 17, 64, generator=torch.Generator().manual_seed(2))
    position_embeddings = base.rotary_emb(17)
    rate = base.soft_mask_rate
    compiled = torch.compile(layer)
    with torch.no_grad():
        expected = layer(hidden, position_embeddings, soft_mask_rate=rate)
        got = compiled(hidden, position_embeddings, soft_mask_rate=rate)
        assert torch.allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ILLAMA_RUN_SLOW"), reason="about a minute on 2 CPU cores; ILLAMA_RUN_SLOW=1")
def test_inductor_compiled_model_matches():
    model = make_model().eval()
    pixels, _ = batch()
    compiled = torch.compile(model)
    with torch.no_grad():
        assert torch.allclose(compiled(pixels).logits, model(pixels).logits, atol=1e-5, rtol=0)


def test_drop_path_rates_increase_linearly_from_zero():
    model = make_model(num_hidden_layers=3, drop_path_rate=0.2)
    rates = [layer.drop_path.drop_prob for layer in model.illama.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


def test_drop_path_is_random_in_training_and_off_in_eval():
    model = make_model(num_hidden_layers=3, drop_path_rate=0.5)
    pixels, _ = batch(size=8)
    model.train()
    torch.manual_seed(0)
    first = model(pixels).logits
    second = model(pixels).logits
    assert not torch.allclose(first, second)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(pixels).logits, model(pixels).logits)


def test_a_few_adamw_steps_reduce_the_loss_on_a_fixed_batch():
    model = make_model().train()
    pixels, labels = batch(size=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = model(pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
