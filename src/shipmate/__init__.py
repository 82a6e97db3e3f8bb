"""shipmate: a deployment control plane for small teams."""

__version__ = "0.1.0"
