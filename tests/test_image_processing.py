"""`build_image_processor` against the authors' evaluation transform, on real ImageNet JPEGs.

The reference is the authors' own transform (ConvNeXt/iLLaMA `build_transform`; docs/DESIGN.md) written here
with torchvision on PIL images: 224 -> Resize(int(224 / 0.875) = 256, bicubic) + CenterCrop(224);
384 -> Resize((384, 384), bicubic); ToTensor; Normalize(ImageNet mean, std). Images are loaded the way
torchvision's ImageFolder does (`Image.open(path).convert("RGB")`).
"""

import json

import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from transformers import AutoImageProcessor

from modeling_illama import build_image_processor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EXACT = 1e-5  # float32 rounding only
TORCHVISION_BACKEND_TOL = 0.05  # documented: the torchvision backend's bicubic differs by ~1/255 / std


def authors_eval_transform(size):
    if size >= 384:  # "warping (no cropping) when evaluated at 384 or larger"
        steps = [T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC)]
    else:
        steps = [T.Resize(int(size / 0.875), interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size)]
    return T.Compose(steps + [T.ToTensor(), T.Normalize(MEAN, STD)])


def process(processor, image):
    return processor(image, return_tensors="pt")["pixel_values"][0]


def max_diff(a, b):
    return (a - b).abs().max().item()


def sample_ids(files):
    return [path.name for path in files]


@pytest.fixture(scope="module")
def processors():
    return {size: build_image_processor(size) for size in (224, 384)}


@pytest.mark.parametrize("size", [224, 384])
def test_processor_equals_authors_transform_on_real_jpegs(processors, imagenet_sample_files, size):
    reference = authors_eval_transform(size)
    checked = 0
    for path in imagenet_sample_files:
        image = Image.open(path)
        out = process(processors[size], image)
        assert out.shape == (3, size, size) and out.dtype == torch.float32
        assert max_diff(out, reference(image.convert("RGB"))) <= EXACT, path.name
        checked += 1
    assert checked >= 7


def test_center_crop_offset_is_rounded_like_torchvision(processors, imagenet_sample_dir):
    """The golf ball (169 x 240 -> 256 x 363) has an odd crop margin, 139: torchvision's CenterCrop puts the crop
    at round(139 / 2) = 70, where Transformers' stock centre crop truncates to 69. Ours must give 70."""
    image = Image.open(imagenet_sample_dir / "n03445777_golf_ball.JPEG").convert("RGB")
    resized = T.Resize(256, interpolation=T.InterpolationMode.BICUBIC)(image)
    assert resized.size == (256, 363)
    normalize = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    rounded = normalize(resized.crop((16, 70, 16 + 224, 70 + 224)))
    truncated = normalize(resized.crop((16, 69, 16 + 224, 69 + 224)))
    out = process(processors[224], image)
    assert max_diff(out, rounded) <= EXACT
    assert max_diff(out, truncated) > 0.01


@pytest.mark.parametrize("size", [224, 384])
def test_real_grayscale_jpegs_become_three_equal_channels(processors, imagenet_sample_files, size):
    grayscale = [path for path in imagenet_sample_files if Image.open(path).mode == "L"]
    assert len(grayscale) == 2
    for path in grayscale:
        out = process(processors[size], Image.open(path))
        assert out.shape == (3, size, size)
        unnormalized = out * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
        assert (
            max_diff(unnormalized[0], unnormalized[1]) <= EXACT and max_diff(unnormalized[1], unnormalized[2]) <= EXACT
        )


@pytest.mark.parametrize("mode", ["CMYK", "P"])
def test_cmyk_and_palette_images_are_converted_to_rgb(processors, imagenet_sample_dir, mode):
    image = Image.open(imagenet_sample_dir / "n01440764_tench.JPEG").convert(mode)
    assert image.mode == mode
    out = process(processors[224], image)
    assert out.shape == (3, 224, 224)
    assert max_diff(out, authors_eval_transform(224)(image.convert("RGB"))) <= EXACT


def test_rgba_images_are_composited_on_white(processors, imagenet_sample_dir):
    rgb = Image.open(imagenet_sample_dir / "n04442312_toaster.JPEG")
    alpha = Image.linear_gradient("L").resize(rgb.size)  # transparent at the top, opaque at the bottom
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    out = process(processors[224], rgba)
    assert out.shape == (3, 224, 224)
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    assert max_diff(out, authors_eval_transform(224)(on_white)) <= EXACT
    assert max_diff(out, authors_eval_transform(224)(rgb)) > 0.5  # the alpha really was used


def test_batch_of_mixed_modes_stacks(processors, imagenet_sample_files):
    images = [Image.open(path) for path in imagenet_sample_files]
    batch = processors[224](images, return_tensors="pt")["pixel_values"]
    assert batch.shape == (len(images), 3, 224, 224)


@pytest.mark.parametrize("size", [224, 384])
def test_saved_preprocessor_config_reloads_with_auto_image_processor(
    processors, imagenet_sample_files, tmp_path, size
):
    processors[size].save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["size"] == {"shortest_edge": size} and saved["crop_pct"] == 0.875 and saved["resample"] == 3
    assert saved["image_mean"] == list(MEAN) and saved["image_std"] == list(STD)
    pil = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert saved["image_processor_type"] == "ILlamaImageProcessor"
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_illama.ILlamaImageProcessor"}
    default = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(default).__name__ == "ILlamaImageProcessor"
    for path in imagenet_sample_files:
        image = Image.open(path)
        expected = process(processors[size], image)
        assert torch.equal(process(pil, image), expected), path.name
        assert torch.equal(process(default, image), expected), path.name


def test_non_square_size_is_rejected():
    with pytest.raises(ValueError, match="square"):
        build_image_processor((224, 160))


def test_torchvision_backend_is_close_to_the_exact_pil_processor(processors, imagenet_sample_files):
    fast = build_image_processor(384, backend="torchvision")
    for path in imagenet_sample_files:
        image = Image.open(path)
        assert max_diff(process(fast, image), process(processors[384], image)) <= TORCHVISION_BACKEND_TOL, path.name


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        build_image_processor(224, backend="opencv")
