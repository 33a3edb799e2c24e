"""GPU capacity: warm headroom (`placeholders = f(pool policy, observed demand, time)`),
the placeholder Deployments that keep it, what the cluster autoscaler needs, and a
doctor check of a cluster's GPU/autoscaler setup. Pure functions on plain data."""

from kftenancy.capacity.demand import PoolDemand, observe_demand
from kftenancy.capacity.deployment import placeholder_deployment, placeholder_deployments
from kftenancy.capacity.headroom import headroom_gpus, placeholders

__all__ = [
    "PoolDemand",
    "headroom_gpus",
    "observe_demand",
    "placeholder_deployment",
    "placeholder_deployments",
    "placeholders",
]
