"""The image processor saved with a segmentation model: Transformers' own Segformer processor, configured.

It resizes an image (bilinear) and, when given, its label map (nearest) to one fixed size, normalises with
the ImageNet mean/std, and turns logits back into label maps at each image's own size
(`post_process_semantic_segmentation`, used by `pipeline("image-segmentation")`). It needs no remote code.
"""

from transformers import SegformerImageProcessorPil

from .configuration_illama import _pair
from .image_processing_illama import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def build_segmentation_image_processor(
    image_size: int | tuple[int, int], reduce_labels: bool = False
) -> SegformerImageProcessorPil:
    """Processor resizing to `image_size` = (height, width). `reduce_labels` maps label 0 to 255 (void) and
    shifts the others down by one, as ADE20K's "other objects" label 0 is conventionally ignored."""
    height, width = _pair(image_size)
    return SegformerImageProcessorPil(
        size={"height": height, "width": width},
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
        do_reduce_labels=reduce_labels,
    )


__all__ = ["build_segmentation_image_processor"]
