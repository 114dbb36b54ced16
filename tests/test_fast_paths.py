"""The fast inference paths are exact: pooled-only last block, fused post-softmax attention (log-sum-exp
identity), complex rotary, the cached mask; torch.compile sees no graph break in a block; the benchmark runs."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import modeling_illama.fused_attention_illama as fused_attention
import modeling_illama.modeling_illama as modeling
from modeling_illama import ILlamaForImageClassification, ILlamaModel, load_preset
from modeling_illama.fused_elementwise_illama import swiglu

RATES = (0.0, 0.37, 1.0)
STYLES = ("post_softmax", "renormalized")
ROOT = Path(__file__).resolve().parent.parent


def make_config(**overrides):
    fields = {
        "hidden_size": 128,
        "num_attention_heads": 2,
        "num_hidden_layers": 3,
        "image_size": 64,
        "intermediate_size": 256,
        "num_labels": 10,
    }
    fields.update(overrides)
    return load_preset("illama-tiny-224", **fields)


def make_classifier(rate=0.0, style="post_softmax", seed=0):
    torch.manual_seed(seed)
    model = ILlamaForImageClassification(make_config(mask_style=style, soft_mask_rate=rate)).eval()
    # random non-trivial norms and biases so that every term of the block matters
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name or name.endswith("norm.weight"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def pixels(batch=3, size=64, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def real_interleaved_rotary(states, cos, sin):
    """The plain real-arithmetic definition (docs/DESIGN.md, the network), for comparison."""
    even, odd = states[..., 0::2].float(), states[..., 1::2].float()
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2).to(states.dtype)


# ------------------------------------------------------------------------------------------- exactness
@pytest.fixture(params=("auto", "materialised", "fused", "recompute"))
def small_n_path(request):
    """Every post_softmax_path of the "sdpa" backend (forced with set_post_softmax_path)."""
    return request.param


def eager_then_sdpa(rate, style, post_softmax_path, **sdpa_kwargs):
    """make_classifier(rate, style) on pixels(): its eager output with every hidden state, then (the model left on
    "sdpa") its sdpa output with `sdpa_kwargs`, both without grad. Returns (model, images, eager, sdpa)."""
    model = make_classifier(rate, style)
    model.set_post_softmax_path(post_softmax_path)
    images = pixels()
    with torch.no_grad():
        model.config._attn_implementation = "eager"
        reference = model(images, output_hidden_states=True)
        model.config._attn_implementation = "sdpa"
        fast = model(images, **sdpa_kwargs)
    return model, images, reference, fast


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("rate", RATES)
def test_default_fast_classifier_equals_full_eager(rate, style, small_n_path):
    """sdpa backend + pooled-only last block (the default inference path) vs eager over every token."""
    model, images, reference, fast = eager_then_sdpa(rate, style, small_n_path)
    with torch.inference_mode():
        fast_inference_mode = model(images)
    assert reference.hidden_states[-1].shape[1] == 17  # the reference really ran every token
    torch.testing.assert_close(fast.logits, reference.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(fast_inference_mode.logits, reference.logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("rate", RATES)
def test_sdpa_backbone_equals_eager_on_every_token(rate, style, small_n_path):
    _, _, reference, fast = eager_then_sdpa(rate, style, small_n_path, output_hidden_states=True)
    for expected, got in zip(reference.hidden_states, fast.hidden_states):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rate", RATES)
def test_pooled_only_computes_the_class_token_exactly(rate):
    torch.manual_seed(0)
    backbone = ILlamaModel(make_config(soft_mask_rate=rate)).eval()
    images = pixels()
    with torch.no_grad():
        full = backbone(images)
        pooled = backbone(images, pooled_only=True)
    assert full.last_hidden_state.shape[1] == 17 and pooled.last_hidden_state.shape[1] == 1
    torch.testing.assert_close(pooled.pooler_output, full.pooler_output, atol=1e-5, rtol=0)


def _record_flash_calls(monkeypatch):
    calls = []
    original = fused_attention.flash_forward
    monkeypatch.setattr(fused_attention, "flash_forward", lambda *a, **k: calls.append(a[3]) or original(*a, **k))
    return calls


def _module(path):
    return SimpleNamespace(training=False, config=SimpleNamespace(post_softmax_path=path, mask_style="post_softmax"))


@pytest.mark.parametrize("rate", RATES)
def test_post_softmax_sdpa_function_matches_eager_and_uses_the_fused_kernel(rate, monkeypatch):
    """The log-sum-exp identity, called directly (B=2, H=3, N=23, d=64; fused path forced)."""
    generator = torch.Generator().manual_seed(3)
    query, key, value = (torch.randn(2, 3, 23, 64, generator=generator) for _ in range(3))
    calls = _record_flash_calls(monkeypatch)
    with torch.no_grad():
        expected, _ = modeling.eager_attention_forward(
            _module("fused"), query, key, value, None, 64**-0.5, soft_mask_rate=rate
        )
        got, weights = modeling.sdpa_attention_forward(
            _module("fused"), query, key, value, None, 64**-0.5, soft_mask_rate=rate
        )
    assert weights is None
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # r = 1: M is all ones, no mask is passed and plain SDPA runs; otherwise one causal + one full fused pass
    assert sorted(calls) == ([] if rate == 1.0 else [False, True])


def test_auto_path_runs_the_fused_passes_exactly_where_the_rule_table_says(monkeypatch):
    calls = _record_flash_calls(monkeypatch)
    for tokens in (197, 577):
        calls.clear()
        query, key, value = (
            torch.randn(1, 1, tokens, 64, generator=torch.Generator().manual_seed(i)) for i in range(3)
        )
        with torch.no_grad():
            expected, _ = modeling.eager_attention_forward(
                _module("auto"), query, key, value, None, 0.125, soft_mask_rate=0.0
            )
            got, _ = modeling.sdpa_attention_forward(
                _module("auto"), query, key, value, None, 0.125, soft_mask_rate=0.0
            )
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        chosen = fused_attention.choose_post_softmax_path(query, training=False)
        assert len(calls) == (2 if chosen == "fused" else 0)


@pytest.mark.parametrize("path", ("auto", "materialised", "fused", "recompute"))
def test_sdpa_gradients_equal_eager_on_every_path(path):
    generator = torch.Generator().manual_seed(4)
    tensors = [torch.randn(2, 3, 19, 64, generator=generator, requires_grad=True) for _ in range(3)]
    grad_out = torch.randn(2, 19, 3, 64, generator=generator)
    expected, _ = modeling.eager_attention_forward(_module(path), *tensors, None, 0.125, soft_mask_rate=0.37)
    expected_grads = torch.autograd.grad(expected, tensors, grad_out)
    got, _ = modeling.sdpa_attention_forward(_module(path), *tensors, None, 0.125, soft_mask_rate=0.37)
    got_grads = torch.autograd.grad(got, tensors, grad_out)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=0)


def test_complex_rotary_equals_the_real_definition_forward_and_backward():
    cos, sin = modeling.rotary_angles(17, 64, 10000.0)
    fused = torch.randn(2, 17, 3, 2, 64, requires_grad=True)  # (batch, tokens, qkv, heads, head_dim)
    key = fused.permute(2, 0, 3, 1, 4)[1]  # a strided view, as in ILlamaAttention
    grad = torch.randn(2, 2, 17, 64)
    got = modeling.apply_interleaved_rotary(key, cos, sin)
    expected = real_interleaved_rotary(key, cos, sin)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    (g_got,) = torch.autograd.grad(got, fused, grad)
    (g_expected,) = torch.autograd.grad(expected, fused, grad)
    torch.testing.assert_close(g_got, g_expected, atol=1e-6, rtol=0)
    odd_offset = torch.randn(2 * 17 * 64 + 1)[1:].view(2, 1, 17, 64)  # no complex view possible: copied
    torch.testing.assert_close(
        modeling.apply_interleaved_rotary(odd_offset, cos, sin),
        real_interleaved_rotary(odd_offset, cos, sin),
        atol=1e-6,
        rtol=0,
    )
    last = key[:, :, -1:]  # the pooled-only query slice
    torch.testing.assert_close(
        modeling.apply_interleaved_rotary(last, cos[-1:], sin[-1:]),
        real_interleaved_rotary(last, cos[-1:], sin[-1:]),
        atol=1e-6,
        rtol=0,
    )


# ---------------------------------------------------------------------------------------- mask cache
@pytest.mark.parametrize("style", ("post_softmax", "renormalized"))
def test_mask_is_built_once_and_rebuilt_only_when_r_changes(mask_builds, style):
    """On the backend that reads M (eager); post-softmax "sdpa" never builds one (tests/test_reliability.py)."""
    model = make_classifier(0.0, style=style)
    model.set_attn_implementation("eager")
    images = pixels(batch=1)
    with torch.no_grad():
        for _ in range(3):
            model(images)
        model(images, output_hidden_states=True)
    assert len(mask_builds) == 1
    model.set_soft_mask_rate(0.5)
    with torch.no_grad():
        model(images)
        model(images)
    assert len(mask_builds) == 2 and mask_builds[-1][1] == 0.5


def test_kept_masks_serve_models_at_other_rates_and_sizes_from_threads():
    """The kept masks belong to the process: two eager models at r = 0.2 and 0.7, at their own size and at a
    larger one (released after each forward), run from four threads at once give the logits each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    models = []
    for rate in (0.2, 0.7):
        model = make_classifier(rate)
        model.set_attn_implementation("eager")
        models.append(model)
    inputs = [(model, pixels(batch=1, size=size)) for model in models for size in (64, 96)]
    alone = []
    with torch.no_grad():
        for model, images in inputs:
            fused_attention.release_soft_attention_masks()  # each from a fresh mask
            alone.append(model(images, interpolate_pos_encoding=True).logits)

        def run(index):
            model, images = inputs[index % len(inputs)]
            return index % len(inputs), model(images, interpolate_pos_encoding=True).logits

        with ThreadPoolExecutor(4) as pool:
            for index, logits in pool.map(run, range(40)):
                assert torch.equal(logits, alone[index])


def test_mask_cached_under_inference_mode_still_trains():
    model = make_classifier(0.0)
    model.set_attn_implementation("eager")  # the backend that reads the kept mask
    images = pixels(batch=2)
    with torch.inference_mode():
        model(images)
    model.train()
    loss = model(images, labels=torch.tensor([1, 2])).loss
    loss.backward()  # raised "Inference tensors cannot be saved for backward" before the fix
    assert model.illama.layers[0].self_attn.qkv_proj.weight.grad is not None


# ---------------------------------------------------------------------------------------- compile
@pytest.mark.parametrize("backend", ("sdpa", "eager"))
def test_torch_compile_sees_no_graph_break_inside_a_layer(backend):
    torch._dynamo.reset()
    model = make_classifier(0.37)
    model.config._attn_implementation = backend
    base, layer = model.illama, model.illama.layers[0]
    hidden = torch.randn(2, 17, 128)
    position_embeddings = base.rotary_emb(17)
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            for last_token_only in (False, True):
                explained = torch._dynamo.explain(layer)(
                    hidden, position_embeddings, last_token_only=last_token_only, soft_mask_rate=0.37
                )
                assert explained.graph_break_count == 0, explained.break_reasons


def test_torch_compile_whole_model_has_no_graph_break():
    torch._dynamo.reset()
    model = make_classifier(0.0)
    with torch.no_grad():
        explained = torch._dynamo.explain(model)(pixels(batch=1))
    assert explained.graph_count == 1 and not explained.break_reasons, explained.break_reasons


# ---------------------------------------------------------------------------------------- benchmark
def _load_benchmark():
    spec = importlib.util.spec_from_file_location("run_benchmark", ROOT / "benchmarks" / "run_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_quick_mode_runs_on_a_tiny_config(tmp_path):
    benchmark = _load_benchmark()
    assert (
        benchmark.main(["--quick", "--smoke", "--skip-memory", "--import-repeats", "0", "--out", str(tmp_path)]) == 0
    )
    result = json.loads((tmp_path / "benchmark_cpu.json").read_text())
    assert result["settings"]["rounds"] == 1 and result["machine"]["torch"] == torch.__version__
    assert set(result["timing"]) == {"infer_b4", "infer_b1", "train_b4"}
    for name, workload in result["timing"].items():
        # training is not timed for illama-eager: with gradients "sdpa" runs the same materialised attention
        expected = {
            f"T/{kind}" for kind in benchmark.KINDS if not (name.startswith("train") and kind == "illama-eager")
        }
        assert set(workload) == expected
        for entry in workload.values():
            assert entry["images_per_s_median"] > 0 and entry["gflops_per_image"] > 0
        assert workload["T/deit-timm"]["ratio_to_deit_median"] == 1.0
    assert (tmp_path / "benchmark_cpu.png").stat().st_size > 1000
    by_cpu = json.loads((tmp_path / "benchmark_by_cpu.json").read_text())
    flags = result["machine"]["cpu_flags"]
    assert list(by_cpu) == [benchmark.cpu_key(flags)] and by_cpu[benchmark.cpu_key(flags)] == result
    assert flags["model_name"] and isinstance(flags["avx512_bf16"], bool) and isinstance(flags["amx_bf16"], bool)
    assert "illama-sdpa T" in (tmp_path / "benchmark_cpu.md").read_text()


def test_benchmark_memory_worker_reports_a_positive_peak():
    """One fresh worker process, as the benchmark runs it (an in-process peak would be hidden by pytest's RSS)."""
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "run_benchmark.py"),
        "--_memory-worker",
        "illama-sdpa",
        "T",
        "--smoke",
        "--quick",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["parameters"] > 0 and row["rss_after_imports_mb"] > 0
    assert row["infer_b4"]["peak_mb"] > 0 and row["train_b4"]["peak_mb"] > 0


# ------------------------------------------------------------------------------- elementwise kernels
def written_rms_norm(hidden_states, weight, eps):
    """LlamaRMSNorm as Transformers writes it (normalise in fp32, scale in the input dtype)."""
    normed = hidden_states.to(torch.float32)
    normed = normed * torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(hidden_states.dtype)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16))
def test_rms_norm_is_bit_identical_to_the_written_arithmetic_with_and_without_grad(dtype):
    generator = torch.Generator().manual_seed(11)
    norm = modeling.ILlamaRMSNorm(96, eps=1e-6).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(96, generator=generator))
    states = (3 * torch.randn(4, 29, 96, generator=generator)).to(dtype)
    expected = written_rms_norm(states, norm.weight.detach(), 1e-6)
    with torch.inference_mode():
        assert torch.equal(norm(states), expected)
    with torch.no_grad():
        assert torch.equal(norm(states), expected)
    assert torch.equal(norm(states.clone().requires_grad_()).detach(), expected)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_rms_norm_gradients_equal_autograd_on_the_written_arithmetic(dtype):
    generator = torch.Generator().manual_seed(12)
    weight = (1 + 0.3 * torch.randn(64, generator=generator)).to(dtype).requires_grad_()
    states = (2 * torch.randn(3, 17, 64, generator=generator)).to(dtype).requires_grad_()
    grad = torch.randn(3, 17, 64, generator=generator).to(dtype)
    norm = modeling.ILlamaRMSNorm(64, eps=1e-6).to(dtype)
    norm.weight = torch.nn.Parameter(weight.detach().clone())
    got = torch.autograd.grad(norm(states), (states, norm.weight), grad)
    expected = torch.autograd.grad(written_rms_norm(states, weight, 1e-6), (states, weight), grad)
    tolerance = 2e-6 if dtype == torch.float32 else 2e-2
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype
        torch.testing.assert_close(g.float(), e.float(), atol=tolerance * e.abs().max().item(), rtol=0)


def test_rms_norm_gradients_under_autocast_and_in_a_training_step_match_the_written_form():
    """fp32 weights and residual stream under bf16 autocast (the training default): same output and grads."""
    generator = torch.Generator().manual_seed(13)
    states = torch.randn(2, 9, 32, generator=generator, requires_grad=True)
    norm = modeling.ILlamaRMSNorm(32)
    with torch.no_grad():
        norm.weight.mul_(1 + 0.2 * torch.randn(32, generator=generator))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = norm(states)
        expected = written_rms_norm(states, norm.weight, 1e-6)
    assert torch.equal(got, expected)
    grad = torch.randn(2, 9, 32, generator=generator)
    got_grads = torch.autograd.grad(got, (states, norm.weight), grad)
    expected_grads = torch.autograd.grad(expected, (states, norm.weight), grad)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, atol=2e-6 * e.abs().max().item(), rtol=0)


def _saved_bytes(function, *inputs):
    """Bytes of distinct storages autograd keeps for backward while `function(*inputs)` runs."""
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function(*inputs)
    return sum(storages.values())


def test_rms_norm_and_swiglu_keep_only_their_inputs_for_backward():
    """RMSNorm keeps x and one rsqrt per token (no normalised copy); SwiGLU keeps gate x and up x (no silu)."""
    states = torch.randn(4, 50, 64, requires_grad=True)
    norm = modeling.ILlamaRMSNorm(64)
    assert _saved_bytes(norm, states) == states.nbytes + 4 * 50 * 4 + norm.weight.nbytes
    written = _saved_bytes(lambda s: written_rms_norm(s, norm.weight, 1e-6), states)
    assert written >= 2 * states.nbytes  # the plain ops keep a normalised copy besides x

    gate, up = (torch.randn(4, 50, 256, requires_grad=True) for _ in range(2))
    assert _saved_bytes(swiglu, gate, up) == gate.nbytes + up.nbytes
    assert _saved_bytes(lambda g, u: torch.nn.functional.silu(g) * u, gate, up) == 3 * gate.nbytes


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_swiglu_output_and_gradients_are_bit_identical_to_plain_autograd(dtype):
    torch.manual_seed(14)
    mlp = modeling.ILlamaMLP(make_config()).to(dtype)
    states = torch.randn(2, 17, 128).to(dtype).requires_grad_()
    grad = torch.randn(2, 17, 128).to(dtype)

    def plain(x):
        return mlp.down_proj(torch.nn.functional.silu(mlp.gate_proj(x)) * mlp.up_proj(x))

    parameters = (states, *mlp.parameters())
    got = mlp(states)
    expected = plain(states)
    assert torch.equal(got, expected)
    for g, e in zip(torch.autograd.grad(got, parameters, grad), torch.autograd.grad(expected, parameters, grad)):
        assert torch.equal(g, e)
    seen = []
    mlp.gate_proj.register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.inference_mode():  # the product in place on silu's output, never on a submodule's output
        assert torch.equal(mlp(states), expected)
        assert torch.equal(seen[-1], mlp.gate_proj(states))


def test_rotary_tables_stay_float32_through_casts_without_a_cast_hook():
    """model.to(bfloat16) casts the rotary buffers; the rotation still uses the float32 angles, and a model cast
    back to float32 (its weights reloaded: the round trip rounds them) gives its original logits bit for bit
    (no `_apply` override involved: the table is stored as int32 bit patterns, which casts leave alone)."""
    assert "_apply" not in vars(modeling.ILlamaRotaryEmbedding)
    model = make_classifier(0.37)
    images = pixels()
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with torch.no_grad():
        expected = model(images).logits
        model.to(torch.bfloat16)
        cos, sin = model.illama.rotary_emb(17)
        reference_cos, reference_sin = modeling.rotary_angles(17, 64, 10000.0)
        assert cos.dtype == torch.float32 and torch.equal(cos, reference_cos) and torch.equal(sin, reference_sin)
        model(images.to(torch.bfloat16))
        model.float()
        model.load_state_dict(weights)
        assert torch.equal(model.illama.rotary_emb.cos, reference_cos)  # the stored table was never rounded
        assert torch.equal(model(images).logits, expected)


def test_a_block_compiles_whole_with_fullgraph_forward_and_backward():
    """fullgraph=True raises on any graph break: one ILlamaLayer (RMSNorm and SwiGLU autograd functions, rotary,
    fused attention) compiled whole, its output and input gradient equal to eager."""
    torch._dynamo.reset()
    model = make_classifier(0.37).train()
    base, layer = model.illama, model.illama.layers[1]
    hidden = torch.randn(2, 17, 128, generator=torch.Generator().manual_seed(5))
    position_embeddings = base.rotary_emb(17)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    outputs = []
    for run in (layer, compiled):
        states = hidden.clone().requires_grad_()
        out = run(states, position_embeddings, soft_mask_rate=0.37)
        (grad,) = torch.autograd.grad(out.square().sum(), states)
        outputs.append((out.detach(), grad))
    torch.testing.assert_close(outputs[1][0], outputs[0][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(outputs[1][1], outputs[0][1], atol=1e-4, rtol=0)


def test_committed_attention_path_results_of_every_cpu_type_keep_auto_within_5_percent():
    """benchmarks/results/attention_paths_by_cpu.json holds one run per CPU type (model name and bf16 hardware);
    on each, the path marked "auto" is the rule table's choice now and within 5% of the fastest candidate."""
    import modeling_illama.fused_attention_illama as fused

    by_cpu = json.loads((ROOT / "benchmarks" / "results" / "attention_paths_by_cpu.json").read_text())
    assert any("Xeon" in key for key in by_cpu)  # the first CPU type measured stays
    for cpu, result in by_cpu.items():
        flags = result["machine"]["cpu_flags"]
        assert cpu.startswith(flags["model_name"]) and f"AMX bf16: {'yes' if flags['amx_bf16'] else 'no'}" in cpu
        assert {"infer_fp32_224", "infer_bf16_224", "train_fp32_224", "train_bf16_224"} <= set(result["timing"])
        for name, case in result["timing"].items():
            dtype = torch.bfloat16 if case["precision"] == "bf16" else torch.float32
            query = torch.empty(1, 1, (case["image"] // 16) ** 2 + 1, 64, dtype=dtype)
            assert case["auto"] == fused.choose_post_softmax_path(query, case["mode"] == "train"), (cpu, name)
            ratios = {path: entry["ratio_to_deit_median"] for path, entry in case["paths"].items()}
            candidates = ("materialised", "fused") if case["mode"] == "infer" else ("fused", "recompute")
            assert ratios[case["auto"]] >= 0.95 * max(ratios[path] for path in candidates), (cpu, name, ratios)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
def test_compiled_rotary_uses_the_real_form_and_equals_the_definition(dtype):
    """Under torch.compile the rotation is the real form in fp32 (inductor has no complex code generation)."""
    torch._dynamo.reset()
    cos, sin = modeling.rotary_angles(17, 64, 10000.0)
    fused = torch.randn(2, 17, 3, 2, 64).to(dtype).requires_grad_()
    key = fused.permute(2, 0, 3, 1, 4)[1]
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    compiled = torch.compile(modeling.apply_interleaved_rotary, backend=backend, fullgraph=True)
    got = compiled(key, cos, sin)
    expected = real_interleaved_rotary(key, cos, sin)
    assert got.dtype == dtype
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    traced_ops = {str(node.target) for g in graphs for node in g.graph.nodes if node.op == "call_function"}
    assert not any("complex" in op for op in traced_ops), traced_ops
    grad = torch.randn_like(got)
    (g_got,) = torch.autograd.grad(got, fused, grad)
    (g_expected,) = torch.autograd.grad(expected, fused, grad)
    torch.testing.assert_close(g_got, g_expected, atol=1e-6, rtol=0)
