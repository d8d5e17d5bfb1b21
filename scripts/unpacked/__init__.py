"""unpacked: keep a tree of unpacked container images in sync with a recipe."""

__version__ = "0.1.0"
