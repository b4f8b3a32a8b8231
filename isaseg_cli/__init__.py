"""isaseg: ISANet semantic segmentation (arXiv 1907.12273) without the OpenMMLab stack."""

__version__ = "0.1.0"
