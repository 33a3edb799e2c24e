"""kftenancy: safe multi-tenant Kubeflow on Kubernetes and OpenShift."""

__version__ = "0.1.0"
