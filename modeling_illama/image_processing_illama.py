"""Image processor for iLLaMA: the authors' (timm's) evaluation transform.

224 px: shorter side to int(224 / 0.875) = 256 (bicubic), centre crop 224. 384 px and above: bicubic warp to a
square. ImageNet mean/std. Grayscale, RGBA (composited on white), CMYK and palette images are converted to RGB;
16-bit and float images are first scaled to 8 bits (`to_8bit`), not clipped; so are uint16 arrays (numpy or torch).

This is ConvNeXt's crop_pct processor with one fix: the centre crop's offset is rounded as torchvision's
CenterCrop rounds it (Transformers truncates, which moves the crop by one pixel when the margin is odd).
This file is copied next to saved processors for `trust_remote_code`: it imports only transformers.
"""

import numpy as np
from PIL import Image
from transformers import ConvNextImageProcessorPil
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
    if low < 0 or high > white:
        raise ValueError(
            f"{image.mode} image with values in [{low:g}, {high:g}]: expected [0, {white:g}] for this mode, "
            "so its brightness scale is unknown; convert it to 8 or 16 bits first"
        )
    return Image.fromarray(np.round(values * (255.0 / white)).astype(np.uint8))


class ILlamaImageProcessor(ConvNextImageProcessorPil):
    """PIL-backend processor reproducing the authors' eval transform exactly (see the module docstring)."""

    resample = BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 224}
    crop_pct = EVAL_CROP_PCT
    do_convert_rgb = True

    def convert_to_rgb(self, image, input_data_format=None):
        if isinstance(image, Image.Image):
            image = to_8bit(image)
        elif isinstance(image, np.ndarray) and image.dtype == np.uint16:  # numpy or torch uint16 pixels
            image = np.round(image * (255.0 / 65535)).astype(np.uint8)
        return super().convert_to_rgb(image, input_data_format=input_data_format)

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


__all__ = ["ILlamaImageProcessor", "to_8bit"]
