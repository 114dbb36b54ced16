"""Inputs that must not give a silently wrong answer: one image decoding for the pipeline, the image processor
and the data loop (bit depths, float arrays, transparency, palette, CMYK, EXIF orientation), and the
transformers version a saved remote-code folder needs. Expected pixels are re-derived here with numpy."""

import configparser
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import TINY_ILLAMA
from transformers import pipeline
from without_package import run_without_package

from modeling_illama import ILlamaConfig, ILlamaForImageClassification, build_image_processor
from modeling_illama.configuration_illama import TRANSFORMERS_MIN_VERSION, check_transformers_version
from modeling_illama.image_processing_illama import to_rgb_image
from modeling_illama.training.data import decode_image

LEVEL = 1.0 / 255 / 0.224 + 1e-4  # one 8-bit level after normalisation (largest at the smallest std)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-saved")
    torch.manual_seed(0)
    config = ILlamaConfig(**{**TINY_ILLAMA, "id2label": {i: f"class{i}" for i in range(5)}})
    model = ILlamaForImageClassification(config).eval()
    with torch.no_grad():
        model.classifier.weight.normal_(0, 1.0)
    model.save_pretrained(folder)
    build_image_processor(32).save_pretrained(folder)
    return folder, model


@pytest.fixture(scope="module")
def photo(imagenet_sample_files):
    """A real RGB photo (uint8, H x W x 3), shrunk to keep the test quick."""
    image = Image.open(imagenet_sample_files[-1]).convert("RGB")
    return np.asarray(image.resize((image.width // 4, image.height // 4)))


def write_files(photo, folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Files of each troublesome kind -> (path, the 8-bit RGB image they must decode to, derived with numpy)."""
    gray = np.round(photo.astype(np.float64) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    files = {}

    path = folder / "gray16.png"  # 16-bit grayscale PNG ("I;16" or "I" in Pillow)
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    files["16-bit grayscale PNG"] = (path, np.repeat(gray[..., None], 3, axis=2))

    alpha = np.linspace(0, 255, photo.shape[0]).round().astype(np.uint8)[:, None].repeat(photo.shape[1], axis=1)
    path = folder / "rgba.png"
    Image.fromarray(np.dstack([photo, alpha])).save(path)
    a = alpha[..., None] / 255.0
    files["RGBA PNG"] = (path, np.round(photo * a + 255 * (1 - a)).astype(np.uint8))

    palette = Image.fromarray(photo).quantize(16)
    palette.info["transparency"] = 0  # palette entry 0 is transparent -> white
    path = folder / "palette.png"
    palette.save(path, transparency=0)
    indices = np.asarray(palette)
    colours = np.asarray(palette.getpalette()[: 3 * 256], dtype=np.uint8).reshape(-1, 3)
    expected = colours[indices]
    expected[indices == 0] = 255
    files["P PNG with a transparent colour"] = (path, expected)

    path = folder / "cmyk.jpg"
    Image.fromarray(photo).convert("CMYK").save(path, quality=95)
    cmyk = np.asarray(Image.open(path), dtype=np.float64)  # the decoded CMYK samples, inverted as Pillow does
    files["CMYK JPEG"] = (path, np.clip(np.round(255 - cmyk[..., :3] - cmyk[..., 3:]), 0, 255).astype(np.uint8))

    path = folder / "exif6.jpg"  # stored sideways, EXIF orientation 6: shown rotated 90 degrees clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(photo, k=1))).save(path, exif=exif, quality=95)
    stored = np.asarray(Image.open(path).convert("RGB"))
    files["EXIF-rotated JPEG"] = (path, np.ascontiguousarray(np.rot90(stored, k=-1)))
    return files


def test_pipeline_processor_and_data_loop_decode_every_file_kind_alike(saved, photo, tmp_path):
    folder, model = saved
    classifier = pipeline("image-classification", model=str(folder))
    processor = classifier.image_processor
    for name, (path, expected) in write_files(photo, tmp_path).items():
        decoded = np.asarray(decode_image({"path": str(path), "bytes": None}))  # illama-eval / training data loop
        assert decoded.shape == expected.shape, name
        assert np.abs(decoded.astype(int) - expected).max() <= 1, name
        assert np.array_equal(np.asarray(decode_image({"bytes": path.read_bytes(), "path": None})), decoded), name

        reference = processor(expected, return_tensors="pt")["pixel_values"]
        paths = {
            "pipeline": classifier.preprocess(str(path))["pixel_values"],
            "processor(path)": processor(str(path), return_tensors="pt")["pixel_values"],
            "processor(PIL)": processor(Image.open(path), return_tensors="pt")["pixel_values"],
            "data loop": processor(Image.fromarray(decoded), return_tensors="pt")["pixel_values"],
        }
        for route, pixels in paths.items():
            assert torch.equal(pixels, paths["data loop"]), (name, route)
        assert (paths["pipeline"] - reference).abs().max().item() <= LEVEL, name

        with torch.no_grad():
            probs = model(paths["processor(PIL)"]).logits.softmax(-1)[0]
        scores = {p["label"]: p["score"] for p in classifier(str(path), top_k=5)}
        assert torch.allclose(torch.tensor([scores[f"class{i}"] for i in range(5)]), probs, atol=1e-6), name


def test_segmentation_pipeline_decodes_like_the_data_loop(photo, tmp_path):
    """pipeline("image-segmentation") of an UperNet on an iLLaMA backbone (its processor: Transformers' own
    Segformer one) decodes files with to_rgb_image too: a 16-bit PNG is scaled, not clipped to white."""
    from transformers import UperNetConfig, UperNetForSemanticSegmentation
    from transformers.image_utils import load_image

    from modeling_illama.image_processing_illama import build_segmentation_image_processor

    torch.manual_seed(0)
    backbone = ILlamaConfig(**{**TINY_ILLAMA, "out_indices": [1, 2]})
    config = UperNetConfig(backbone_config=backbone, hidden_size=8, use_auxiliary_head=False, num_labels=3)
    folder = tmp_path / "seg"
    UperNetForSemanticSegmentation(config).eval().save_pretrained(folder)
    build_segmentation_image_processor(32).save_pretrained(folder)
    segmenter = pipeline("image-segmentation", model=str(folder), subtask="semantic")
    processor = segmenter.image_processor
    for name, (path, expected) in write_files(photo, tmp_path).items():
        got = segmenter.preprocess(str(path))["pixel_values"]
        decoded = np.asarray(decode_image({"path": str(path), "bytes": None}))  # the training / eval data loop
        assert torch.equal(got, processor(Image.fromarray(decoded), return_tensors="pt")["pixel_values"]), name
        assert (got - processor(expected, return_tensors="pt")["pixel_values"]).abs().max().item() <= LEVEL, name
        if name == "16-bit grayscale PNG":  # what Transformers' own decoding gives: clipped to white
            clipped = processor(load_image(str(path)), return_tensors="pt")["pixel_values"]
            assert (got - clipped).abs().max().item() > 1.0
    assert segmenter(str(path))  # and the pipeline runs on them


def test_float_arrays_in_0_1_are_the_uint8_image(saved, photo):
    folder, model = saved
    classifier = pipeline("image-classification", model=str(folder))
    processor = classifier.image_processor
    reference = processor(photo, return_tensors="pt")["pixel_values"]
    floats = {
        "numpy HWC float32 [0, 1]": photo.astype(np.float32) / 255,
        "torch CHW [0, 1] (ToTensor)": torch.from_numpy(photo.copy()).permute(2, 0, 1).float() / 255,
        "numpy HWC float64 0..255": photo.astype(np.float64),
        "torch CHW uint8": torch.from_numpy(photo.copy()).permute(2, 0, 1).contiguous(),
        "torch CHW bfloat16 0..255": torch.from_numpy(photo.copy()).permute(2, 0, 1).to(torch.bfloat16),
    }
    for name, array in floats.items():
        assert torch.equal(processor(array, return_tensors="pt")["pixel_values"], reference), name
        assert np.array_equal(np.asarray(decode_image(array)), photo), name
    expected = {p["label"]: p["score"] for p in classifier(photo, top_k=5)}
    for name in ("numpy HWC float32 [0, 1]", "torch CHW [0, 1] (ToTensor)"):
        assert {p["label"]: p["score"] for p in classifier(floats[name], top_k=5)} == expected, name


@pytest.mark.parametrize(
    "array, message",
    [
        (
            np.full((8, 8, 3), -0.5, np.float32),
            r"values in \[-0\.5, -0\.5\]: expected \[0, 1\] or \[0, 255\].*normalised",
        ),
        (np.full((8, 8, 3), 300.0), r"float64 image array with values in \[300, 300\]"),
        (np.full((8, 8, 3), np.nan, np.float32), r"values in \[nan, nan\]"),
        (np.full((8, 8, 3), 70000, np.int32), r"int32 image array with values in \[70000, 70000\]"),
        (np.zeros((0, 8, 3), np.uint8), r"shape \(0, 8, 3\) has no pixels"),
        (np.zeros((8, 8, 2), np.uint8), r"shape \(8, 8, 2\): expected \(height, width\)"),
    ],
)
def test_arrays_with_no_known_scale_or_no_pixels_are_refused(array, message):
    processor = build_image_processor(32)
    with pytest.raises(ValueError, match=message):
        processor(array)
    assert decode_image(array) is None  # in a data set: skipped and counted


def test_empty_and_missing_files_and_empty_images_are_refused(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png is empty \(0 bytes\)"):
        to_rgb_image(str(tmp_path / "empty.png"))
    with pytest.raises(IsADirectoryError, match="is a folder"):
        to_rgb_image(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such image file"):
        to_rgb_image(str(tmp_path / "absent.png"))
    with pytest.raises(ValueError, match=r"size 0 x 5 has no pixels"):
        build_image_processor(32)(Image.new("RGB", (0, 5)))


@pytest.mark.parametrize("mode", ["LA", "1", "L", "RGB"])
def test_other_pillow_modes_match_their_numpy_rgb(mode, photo):
    image = Image.fromarray(photo).convert(mode)
    values = np.asarray(image).astype(np.float64)
    if mode == "LA":  # composited on white
        values = np.round(values[..., 0] * values[..., 1] / 255 + 255 * (1 - values[..., 1] / 255))
    if values.ndim == 2:
        values = np.repeat(values[..., None], 3, axis=2) * (255 if mode == "1" else 1)
    assert np.abs(np.asarray(to_rgb_image(image)).astype(int) - values).max() <= 1


# ------------------------------------------------------------------ the transformers version range


def test_declared_transformers_floor_is_the_one_the_code_checks():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    requires = [line.strip() for line in parser["options"]["install_requires"].splitlines()]
    assert f"transformers>={TRANSFORMERS_MIN_VERSION},<6" in requires
    makefile = (REPO / "Makefile").read_text()
    assert "test-oldest:" in makefile and "tests/test_auto_remote_pipeline.py" in makefile
    check_transformers_version(TRANSFORMERS_MIN_VERSION)
    check_transformers_version("5.99.1")
    for old in ("5.0.0", "5.17.0", "5.19.9", "6.0.0", "4.57.6"):
        with pytest.raises(ImportError, match=rf"needs transformers>={TRANSFORMERS_MIN_VERSION},<6 but .* {old} is"):
            check_transformers_version(old)


OLD_TRANSFORMERS_SCRIPT = textwrap.dedent(
    """
    import sys

    import transformers
    from transformers import AutoConfig, AutoImageProcessor

    assert transformers.__version__ == "5.17.0", transformers.__version__
    for auto in (AutoConfig, AutoImageProcessor):
        try:
            auto.from_pretrained(sys.argv[1], trust_remote_code=True)
            print("loaded")
        except ImportError as error:
            print("ImportError:", error)
    """
)


def transformers_reporting_version(version: str, folder: Path) -> Path:
    """`folder/transformers`: the installed transformers (its files linked) whose `__init__.py` reports `version`,
    as an installed older release would report itself."""
    import transformers

    source = Path(transformers.__file__).parent
    fake = folder / "transformers"
    fake.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name not in ("__init__.py", "__pycache__"):
            (fake / entry.name).symlink_to(entry)
    init = (source / "__init__.py").read_text()
    (fake / "__init__.py").write_text(
        init.replace(f'__version__ = "{transformers.__version__}"', f'__version__ = "{version}"')
    )
    return folder


def test_remote_code_on_an_older_transformers_says_which_version_it_needs(saved, tmp_path, monkeypatch):
    folder, _ = saved
    old = transformers_reporting_version("5.17.0", tmp_path / "old")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(old), os.environ.get("PYTHONPATH", "")]))
    result = run_without_package(OLD_TRANSFORMERS_SCRIPT, [folder], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    expected = (
        f"ImportError: iLLaMA needs transformers>={TRANSFORMERS_MIN_VERSION},<6 but transformers 5.17.0 is "
        f"installed: pip install 'transformers>={TRANSFORMERS_MIN_VERSION},<6'"
    )
    assert result.stdout.strip().splitlines() == [expected, expected]
