"""docs/DESIGN.md "Sizes": the six released iLLaMA sizes, shared by the preset and conversion tests."""

# name: (D, depth, heads, SwiGLU width, image size, exact parameter count with 1000 classes)
DESIGN_SIZES = {
    "illama-tiny-224": (192, 12, 3, 512, 224, 5_701_096),
    "illama-small-224": (384, 12, 6, 1024, 224, 22_018_024),
    "illama-base-224": (768, 12, 12, 2048, 224, 86_502_376),
    "illama-large-224": (1024, 24, 16, 2816, 224, 310_445_032),
    "illama-base-384": (768, 12, 12, 2048, 384, 86_794_216),
    "illama-large-384": (1024, 24, 16, 2816, 384, 310_834_152),
}
