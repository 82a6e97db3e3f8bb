"""The scanner: rules over Kubernetes objects from any source, secret detection, reports."""
