"""Building the image processor that reproduces the authors' evaluation transform at a given resolution."""

from .image_processing_illama import EVAL_CROP_PCT, ILlamaImageProcessor


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


__all__ = ["build_image_processor"]
