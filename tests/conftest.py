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
