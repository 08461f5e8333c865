"""facewarden: a self-hosted face recognition search engine built to be run lawfully."""

__version__ = "0.1.0"
