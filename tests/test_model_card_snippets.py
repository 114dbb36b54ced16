"""The model cards' snippets run as written on a machine WITHOUT this package: a released checkpoint (random weights,
the authors' layout) is converted, and every python block of the card the conversion writes runs in a subprocess
that cannot import `modeling_illama`, on a real image. The committed cards hold the same snippets."""

import json
import re
from pathlib import Path

import pytest
import torch
from without_package import run_without_package

from modeling_illama import ILlamaForImageClassification, load_preset
from modeling_illama.conversion import RELEASED_VARIANTS, convert_checkpoint, export_official, render_card

REPO = Path(__file__).resolve().parent.parent
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LOADS = re.compile(r"(from_pretrained|pipeline)\(")

# The Hub is not reachable from the tests. AutoBackbone.from_pretrained asks the Hub whether its argument is a repo
# (else it builds a timm backbone); the stand-in answers as the Hub would for the card's repo, and the repo id is
# replaced by the converted folder, which holds what the repo would.
HUB_STAND_IN = """
import transformers.models.auto.auto_factory as auto_factory

class _Hub:
    def repo_exists(self, repo_id, **kwargs):
        return True

auto_factory.hf_api = lambda: _Hub()
"""


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny released checkpoint, converted (random weights in the authors' layout, as the README's stand-in)."""
    root = tmp_path_factory.mktemp("card")
    variant = RELEASED_VARIANTS[0]
    torch.manual_seed(0)
    export_official(ILlamaForImageClassification(load_preset(variant.preset)).eval(), root / variant.filename)
    return convert_checkpoint(root / variant.filename, root / variant.name), variant


def test_every_card_snippet_runs_without_the_package(converted, tmp_path):
    folder, variant = converted
    card = (folder / "README.md").read_text(encoding="utf-8")
    blocks = PYTHON_BLOCK.findall(card)
    assert len(blocks) == 4, f"expected classification (2), feature maps and embeddings snippets, got {len(blocks)}"
    script = HUB_STAND_IN
    for i, block in enumerate(blocks):
        code = block.replace(f'"path/to/{variant.name}"', repr(str(folder)))
        code = code.replace(f'"your-name/{variant.name}"', repr(str(folder)))
        code = code.replace('"cat.jpg"', repr(str(REPO / "docs" / "images" / "cat.jpg")))
        script += f"\nprint('== block {i}')\n{code}\n"
    done = run_without_package(script, [], tmp_path)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    out = done.stdout
    # what each block prints: 5 pipeline predictions, 5 (label, probability) pairs, 4 maps of 14 x 14, a 192-vector
    predictions = json.loads(out.split("== block 0\n")[1].split("\n")[0].replace("'", '"'))
    assert len(predictions) == 5 and all(p["label"] for p in predictions)
    assert "torch.Size([1, 192])" in out.split("== block 3\n")[1]
    assert out.split("== block 2\n")[1].split("\n")[0] == str([(1, 192, 14, 14)] * 4)
    assert "blocked for this test" not in done.stderr


@pytest.mark.parametrize("variant", RELEASED_VARIANTS, ids=lambda v: v.name)
def test_every_committed_card_passes_trust_remote_code_to_every_load(variant):
    card = (REPO / "model_cards" / f"{variant.name}.md").read_text(encoding="utf-8")
    assert card == render_card(variant.name, variant)
    for block in PYTHON_BLOCK.findall(card):
        compile(block, variant.name, "exec")
        for line in block.splitlines():
            if LOADS.search(line):
                assert "trust_remote_code=True" in line, f"{variant.name}: {line}"
    assert f"GMACs: {variant.macs.rstrip('G')}" in card and f"Image size: {variant.resolution}" in card


def test_the_training_card_snippet_runs_without_the_package(tmp_path):
    """The card illama-train writes into its output folder: its snippet, run on that kind of folder (a saved
    classifier with its processor and code), without the package."""
    from modeling_illama import ILlamaConfig, build_image_processor
    from modeling_illama.training.model_card import render_training_card

    folder = tmp_path / "illama-trained"
    torch.manual_seed(0)
    config = ILlamaConfig(
        image_size=224,
        patch_size=32,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=96,
        id2label={0: "cat", 1: "dog"},
    )
    ILlamaForImageClassification(config).save_pretrained(folder)
    build_image_processor(224).save_pretrained(folder)
    card = render_training_card(
        str(folder),
        {"learning_rate": 1e-3},
        {},
        [],
        model="illama-tiny-224",
        dataset="data/cifar10-mini",
        eval_split="test",
    )
    blocks = PYTHON_BLOCK.findall(card)
    assert blocks and all(
        "trust_remote_code=True" in line for b in blocks for line in b.splitlines() if LOADS.search(line)
    )
    cat = repr(str(REPO / "docs" / "images" / "cat.jpg"))
    script = "\n".join(blocks) + f"\nprint(sorted(p['label'] for p in classifier({cat}, top_k=2)))\n"
    done = run_without_package(script, [], tmp_path)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    assert done.stdout.strip().splitlines()[-1] == "['cat', 'dog']"
