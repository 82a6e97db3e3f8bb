"""Plan -> Kubernetes objects -> output formats (manifests, Helm, Kustomize, Argo CD, ...)."""
