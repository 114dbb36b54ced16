"""Image processing for iLLaMA: the one image decoding, the authors' (timm's) evaluation transform, and the
processor saved with a segmentation model.

Decoding (`to_rgb_image`) is shared by the image processor, `pipeline("image-classification")` and
`pipeline("image-segmentation")` of iLLaMA models, illama-eval and the training data, so a file or array gives the
same pixels on every path:

- files and PIL images are turned upright by their EXIF orientation;
- 16-bit ("I;16", "I") images are scaled by 255 / 65535 and float ("F") images by 255 (values in [0, 1]),
  never clipped; uint16 arrays are scaled by 255 / 65535;
- float arrays (numpy HWC or torch CHW, as torchvision's ToTensor gives) in [0, 1] are scaled by 255, float
  arrays with values above 1 are read on the 0..255 scale; values outside [0, 255] (a normalised tensor) or
  not finite have no known scale and are refused;
- transparency (RGBA, LA, palette or grayscale with a transparent colour) is composited on white; palette,
  CMYK, grayscale and bilevel images become RGB.

The evaluation transform at 224 px: shorter side to int(224 / 0.875) = 256 (bicubic), centre crop 224. 384 px
and above: bicubic warp to a square. ImageNet mean/std. It is ConvNeXt's crop_pct processor with one fix: the
centre crop's offset is rounded as torchvision's CenterCrop rounds it (Transformers truncates, which moves the
crop by one pixel when the margin is odd).

This file is copied next to saved processors for `trust_remote_code`: it imports only transformers and the
configuration file copied with it.
"""

# isort: off
from .configuration_illama import to_pair  # first: checks the installed transformers version (remote code)

# isort: on
import base64
import io
import os

import numpy as np
from PIL import Image, ImageOps
from transformers import ConvNextImageProcessorPil, SegformerImageProcessorPil
from transformers.image_processing_backends import PilBackend
from transformers.image_transforms import get_resize_output_image_size
from transformers.image_utils import ChannelDimension, SizeDict

IMAGENET_DEFAULT_MEAN = [0.485, 0.456, 0.406]
IMAGENET_DEFAULT_STD = [0.229, 0.224, 0.225]
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC
EVAL_CROP_PCT = 0.875
EVAL_WARP_FROM = 384  # at this resolution and above the transform warps to a square instead of cropping
# Pillow modes holding more than 8 bits per pixel -> the value that maps to 255. "I" is how Pillow opens many
# 16-bit grayscale files (and 32-bit integer TIFFs); it is read as 16-bit. "F" (float) is read as [0, 1].
HIGH_BIT_DEPTH_WHITE = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1.0}
WHITE = (255, 255, 255, 255)


def to_8bit(image: Image.Image) -> Image.Image:
    """A 16-bit or float image scaled to 8-bit grayscale ("L"); other images unchanged.

    Pillow's own `convert("RGB")` clips such images at 255 (a 16-bit photo becomes almost white). Values outside
    the mode's range (a float image not in [0, 1], a 32-bit integer image above 65535) have no known scale and
    raise a ValueError instead of being guessed.
    """
    white = HIGH_BIT_DEPTH_WHITE.get(image.mode)
    if white is None:
        return image
    values = np.asarray(image, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > white:
        raise ValueError(
            f"{image.mode} image with values in [{low:g}, {high:g}]: expected [0, {white:g}] for this mode, "
            "so its brightness scale is unknown; convert it to 8 or 16 bits first"
        )
    return Image.fromarray(np.round(values * (255.0 / white)).astype(np.uint8))


def open_image(source, timeout: float | None = None) -> Image.Image:
    """A PIL image (not yet converted) from a path, bytes, a file object, an http(s) URL or a base64 string."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, str):
        if source.startswith(("http://", "https://")):
            from urllib.request import urlopen

            with urlopen(source, timeout=timeout) as response:
                source = response.read()
        elif os.path.isfile(source):
            if os.path.getsize(source) == 0:
                raise ValueError(f"{source} is empty (0 bytes): not an image")
            image = Image.open(source)
            image.load()
            return image
        elif os.path.isdir(source):
            raise IsADirectoryError(f"{source} is a folder: expected an image file")
        else:
            try:
                source = base64.b64decode(source.split(",")[-1], validate=True)
            except ValueError:
                raise FileNotFoundError(f"no such image file: {source}") from None
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ValueError("empty image bytes (0 bytes): not an image")
        source = io.BytesIO(source)
    image = Image.open(source)
    image.load()
    return image


def _array_to_image(array, input_data_format=None) -> Image.Image:
    """An HWC / CHW / HW numpy array or torch tensor as a PIL image with 8 bits per channel (see the module
    docstring for the scales)."""
    channels_first = input_data_format in (ChannelDimension.FIRST, "channels_first")
    if hasattr(array, "detach"):  # torch tensor: channels first unless the last axis is clearly the channel one
        if input_data_format is None:
            channels_first = array.ndim == 3 and array.shape[0] in (1, 3, 4)
        array = array.detach().cpu()
        array = (array.float() if array.is_floating_point() else array).numpy()  # bfloat16 has no numpy dtype
    elif input_data_format is None:
        channels_first = array.ndim == 3 and array.shape[-1] not in (1, 3, 4) and array.shape[0] in (1, 3, 4)
    array = np.asarray(array)
    if array.ndim == 3 and channels_first:
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"image array of shape {tuple(array.shape)}: expected (height, width), (height, width, 1|3|4) or "
            "(1|3|4, height, width)"
        )
    if array.size == 0:
        raise ValueError(f"image array of shape {tuple(array.shape)} has no pixels")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.bool_:
        pixels = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        pixels = np.round(array * (255.0 / 65535)).astype(np.uint8)
    else:
        values = array.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        floating = np.issubdtype(array.dtype, np.floating)
        if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
            raise ValueError(
                f"{array.dtype} image array with values in [{low:g}, {high:g}]: expected [0, 1] or [0, 255]"
                + (" (is it normalised already? pass the image before normalisation)" if low < 0 else "")
            )
        pixels = np.round(values * 255.0 if floating and high <= 1.0 else values).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(pixels))


def to_rgb_image(image, input_data_format=None) -> Image.Image:
    """The one decoding of an image for iLLaMA: a path / bytes / PIL image / array -> an 8-bit RGB PIL image
    (EXIF orientation applied, high bit depths scaled, transparency composited on white)."""
    if isinstance(image, (str, bytes, bytearray, os.PathLike)) or hasattr(image, "read"):
        image = open_image(image)
    elif not isinstance(image, Image.Image):
        if not hasattr(image, "shape"):
            raise TypeError(f"expected an image (path, PIL image, numpy array or torch tensor), got {type(image)}")
        image = _array_to_image(image, input_data_format)
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image of size {image.width} x {image.height} has no pixels")
    image = to_8bit(ImageOps.exif_transpose(image))
    if image.mode == "RGB":
        return image
    if (image.mode in ("P", "L", "RGB") and "transparency" in image.info) or image.mode in ("PA", "LA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        return Image.alpha_composite(Image.new("RGBA", image.size, WHITE), image).convert("RGB")
    return image.convert("RGB")


class ILlamaImageProcessor(ConvNextImageProcessorPil):
    """PIL-backend processor reproducing the authors' eval transform exactly (see the module docstring); every
    input goes through `to_rgb_image` first."""

    resample = BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 224}
    crop_pct = EVAL_CROP_PCT
    do_convert_rgb = True
    decodes_with_to_rgb_image = True  # read by the pipeline hook below (also on the remote-code copy)

    def fetch_images(self, image_url_or_urls):
        """Paths, URLs and bytes opened without Transformers' `load_image` (which clips 16-bit images)."""
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(item) for item in image_url_or_urls]
        if isinstance(image_url_or_urls, (str, bytes, os.PathLike)):
            return to_rgb_image(image_url_or_urls)
        return image_url_or_urls

    def process_image(self, image, do_convert_rgb=None, input_data_format=None, **kwargs):
        if do_convert_rgb is False:
            return super().process_image(image, do_convert_rgb=False, input_data_format=input_data_format, **kwargs)
        rgb = np.asarray(to_rgb_image(image, input_data_format))
        return super().process_image(rgb, do_convert_rgb=False, input_data_format=ChannelDimension.LAST, **kwargs)

    def resize(self, image, size: SizeDict, resample=None, crop_pct: float = EVAL_CROP_PCT, **kwargs):
        """Below 384: resize the shorter side to size / crop_pct, then centre crop with torchvision's rounding.
        At 384 and above: warp to a square (no crop)."""
        crop = size.shortest_edge
        if not crop or crop >= EVAL_WARP_FROM:
            return super().resize(image, size, resample, crop_pct, **kwargs)
        height, width = get_resize_output_image_size(
            image, size=int(crop / crop_pct), default_to_square=False, input_data_format=ChannelDimension.FIRST
        )
        image = PilBackend.resize(self, image, size=SizeDict(height=height, width=width), resample=resample, **kwargs)
        top, left = int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))
        return image[..., top : top + crop, left : left + crop]


def _decodes_with_to_rgb_image(pipe) -> bool:
    """A classifier with a processor of this file, or a segmentation model on an iLLaMA backbone (its processor
    is Transformers' own Segformer one, so that the folder loads without remote code)."""
    backbone = getattr(pipe.model.config, "backbone_config", None)
    return getattr(pipe.image_processor, "decodes_with_to_rgb_image", False) or (
        getattr(backbone, "model_type", None) == "illama"
    )


def _decode_pipeline_inputs_with_to_rgb_image():
    """`pipeline("image-classification")` and `pipeline("image-segmentation")` open files with Transformers'
    `load_image`, which converts to RGB by clipping (16-bit images turn white) and drops transparency: for an
    iLLaMA model, decode paths and PIL images with `to_rgb_image` first, so the pipeline gives the pixels the
    processor and the data loops give. Other models' pipelines are untouched."""
    from transformers.pipelines.image_classification import ImageClassificationPipeline
    from transformers.pipelines.image_segmentation import ImageSegmentationPipeline

    for pipeline_class in (ImageClassificationPipeline, ImageSegmentationPipeline):
        original = pipeline_class.preprocess
        if getattr(original, "decodes_with_to_rgb_image", False):
            continue

        def preprocess(self, image, *args, _original=original, **kwargs):
            if _decodes_with_to_rgb_image(self) and not hasattr(image, "shape"):
                image = to_rgb_image(image)
            return _original(self, image, *args, **kwargs)

        preprocess.decodes_with_to_rgb_image = True
        pipeline_class.preprocess = preprocess


_decode_pipeline_inputs_with_to_rgb_image()


def build_image_processor(image_size: int = 224, backend: str = "pil"):
    """The authors' eval transform at `image_size` (square): crop below 384 px, warp at 384 and above.

    `backend="pil"` (default) matches the authors' PIL + torchvision pipeline exactly. `"torchvision"` returns
    Transformers' ConvNeXt torchvision-backend processor: faster on batches, but its bicubic resize differs by up
    to ~0.02 and its centre crop truncates instead of rounding.
    """
    if isinstance(image_size, (tuple, list)):
        if image_size[0] != image_size[1]:
            raise ValueError(f"the eval transform is defined for square inputs, got image_size {tuple(image_size)}.")
        image_size = image_size[0]
    if backend not in ("pil", "torchvision"):
        raise ValueError(f"backend must be 'pil' or 'torchvision', got {backend!r}.")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}.")
    if backend == "pil":
        return ILlamaImageProcessor(size={"shortest_edge": int(image_size)})
    from transformers import ConvNextImageProcessor  # torchvision is slow to import and optional

    return ConvNextImageProcessor(
        size={"shortest_edge": int(image_size)},
        crop_pct=EVAL_CROP_PCT,
        resample=ILlamaImageProcessor.resample,
        image_mean=ILlamaImageProcessor.image_mean,
        image_std=ILlamaImageProcessor.image_std,
        do_convert_rgb=True,
    )


def build_segmentation_image_processor(
    image_size: int | tuple[int, int], reduce_labels: bool = False
) -> SegformerImageProcessorPil:
    """The processor saved with a segmentation model: Transformers' own Segformer processor (no remote code),
    resizing an image (bilinear) and its label map (nearest) to `image_size` = (height, width), normalising with
    the ImageNet mean/std. `reduce_labels` maps label 0 to 255 (void) and shifts the others down by one, as
    ADE20K's "other objects" label 0 is conventionally ignored."""
    height, width = to_pair(image_size)
    return SegformerImageProcessorPil(
        size={"height": height, "width": width},
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
        do_reduce_labels=reduce_labels,
    )


__all__ = [
    "ILlamaImageProcessor",
    "build_image_processor",
    "build_segmentation_image_processor",
    "open_image",
    "to_8bit",
    "to_rgb_image",
]
