"""Pure renderers: desired Kubernetes objects as plain dicts, computed from the policy."""
