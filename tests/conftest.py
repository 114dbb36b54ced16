"""Shared, generic fixtures. Keep this file small: test-specific helpers belong in the test files."""

import os
from pathlib import Path

import pytest

# Once any test has imported the standard library's distutils, setuptools' shim (loaded by Inductor's C++ build)
# asserts that it finds its own copy and fails torch.compile; tell it to keep the standard library's.
os.environ.setdefault("SETUPTOOLS_USE_DISTUTILS", "stdlib")

TESTS_DIR = Path(__file__).resolve().parent
IMAGENET_SAMPLE_DIR = TESTS_DIR / "data" / "imagenet-sample"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds on a 2-core CPU machine")


@pytest.fixture(scope="session")
def imagenet_sample_dir() -> Path:
    """tests/data/imagenet-sample: eight real ImageNet JPEGs (two grayscale) and their classes.tsv."""
    return IMAGENET_SAMPLE_DIR


@pytest.fixture(scope="session")
def imagenet_sample_files(imagenet_sample_dir) -> list[Path]:
    """The sample JPEG paths, sorted by name."""
    files = sorted(imagenet_sample_dir.glob("*.JPEG"))
    assert len(files) >= 8, f"test images missing from {imagenet_sample_dir}"
    return files


@pytest.fixture
def mask_builds(monkeypatch) -> list[tuple]:
    """(N, r, style, dtype, device) of every N x N soft mask the model's attention functions build: a call that
    gets the kept mask back (the same tensor) is not a build. Starts with no mask kept."""
    import modeling_illama.fused_attention_illama as fused
    import modeling_illama.modeling_illama as modeling

    fused.release_soft_attention_masks()
    builds, returned, original = [], [], modeling.soft_attention_mask

    def counting(*args):
        mask = original(*args)
        if mask is not None and not any(mask is seen for seen in returned):
            returned.append(mask)
            builds.append(args)
        return mask

    monkeypatch.setattr(modeling, "soft_attention_mask", counting)
    return builds
