"""The authors' evaluation transform as a stock Transformers image processor (no custom code to ship).

224 px: shorter side to int(224 / 0.875) = 256 (bicubic), centre crop 224. 384 px: bicubic warp to 384 x 384.
ImageNet mean/std. Grayscale, RGBA (composited on white), CMYK and palette images are converted to RGB.
ConvNeXt's processor implements exactly this crop_pct rule (crop below 384, warp at 384 and above).
"""

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC

EVAL_CROP_PCT = 0.875


def build_image_processor(image_size: int = 224, backend: str = "pil"):
    """Image processor reproducing the authors' eval transform at `image_size` (square).

    `backend="pil"` matches timm's PIL pipeline exactly; `"torchvision"` is faster and differs by up to ~0.02.
    """
    if isinstance(image_size, (tuple, list)):
        if image_size[0] != image_size[1]:
            raise ValueError(f"the eval transform is defined for square inputs, got image_size {tuple(image_size)}.")
        image_size = image_size[0]
    if backend not in ("pil", "torchvision"):
        raise ValueError(f"backend must be 'pil' or 'torchvision', got {backend!r}.")
    if backend == "pil":
        from transformers import ConvNextImageProcessorPil as processor_class
    else:  # imported on demand: torchvision is slow to import and optional
        from transformers import ConvNextImageProcessor as processor_class
    return processor_class(
        size={"shortest_edge": int(image_size)},
        crop_pct=EVAL_CROP_PCT,
        resample=BICUBIC,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
        do_convert_rgb=True,
    )


__all__ = ["build_image_processor", "EVAL_CROP_PCT"]
