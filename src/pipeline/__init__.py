"""ffn-pipeline: reproducible feed-forward network training under DVC and MLflow."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ffn-pipeline")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
