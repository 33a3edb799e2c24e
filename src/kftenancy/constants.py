"""Names shared by every part of kftenancy: API groups, label and annotation keys.

One place, so that the renderer, the controller, the webhook and the gateway can never
disagree about how an object is recognised as ours.
"""

from __future__ import annotations

from typing import Final

# Our own API.
API_GROUP: Final = "kftenancy.dev"
API_VERSION: Final = "v1alpha1"
POLICY_KIND: Final = "TenancyPolicy"
POLICY_PLURAL: Final = "tenancypolicies"
POLICY_SINGULAR: Final = "tenancypolicy"
DEFAULT_POLICY_NAME: Final = "default"

# Server-side apply: the field manager every kftenancy write uses ...
FIELD_MANAGER: Final = "kftenancy"
# ... except the finalizer on a Profile, which is not ours. An Apply is a manager's whole
# intent for an object: a finalizer-only Apply as FIELD_MANAGER would delete any Profile
# field applied under that name (e.g. `kftenancy render --user` applied server-side with
# --field-manager=kftenancy). This manager never owns anything but the finalizer.
FINALIZER_FIELD_MANAGER: Final = "kftenancy-finalizer"

# Ownership labels on every object we create (used to find and prune them).
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "kftenancy"
LABEL_TENANT: Final = f"{API_GROUP}/tenant"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"

# kftenancy's own annotations.
ANN_ADOPT: Final = f"{API_GROUP}/adopt"  # value: the Profile name allowed to adopt a namespace
ANN_OFFBOARDED_AT: Final = f"{API_GROUP}/offboarded-at"  # RFC 3339 time access was revoked
ANN_DELETE_AFTER: Final = f"{API_GROUP}/delete-after"  # RFC 3339 end of the retention period
ANN_USER_ID: Final = f"{API_GROUP}/user-id"  # the exact user id a Profile was onboarded for
ANN_CONTRIBUTORS: Final = f"{API_GROUP}/contributors"  # JSON list, for upstream Profile CRDs
ANN_ONBOARDED_BY: Final = f"{API_GROUP}/onboarded-by"  # what created a Profile (gateway, cli, ...)
# The Profile finalizer: offboarding (revoke access, keep data) runs before a Profile goes.
FINALIZER: Final = f"{API_GROUP}/offboard"

# Kubeflow (upstream) names we stay compatible with.
KUBEFLOW_GROUP: Final = "kubeflow.org"
PROFILE_KIND: Final = "Profile"
PROFILE_PLURAL: Final = "profiles"
PROFILE_VERSIONS: Final = ("v1", "v1beta1")
ANN_OWNER: Final = "owner"
KUBEFLOW_PROFILE_PART_OF: Final = "kubeflow-profile"

# PodTolerationRestriction admission plugin annotations.
ANN_DEFAULT_TOLERATIONS: Final = "scheduler.alpha.kubernetes.io/defaultTolerations"
ANN_TOLERATIONS_WHITELIST: Final = "scheduler.alpha.kubernetes.io/tolerationsWhitelist"

# Web identity (the EKS pod-identity-webhook convention).
ANN_ROLE_ARN: Final = "eks.amazonaws.com/role-arn"
ANN_AUDIENCE: Final = "eks.amazonaws.com/audience"
ANN_STS_REGIONAL: Final = "eks.amazonaws.com/sts-regional-endpoints"
ANN_TOKEN_EXPIRATION: Final = "eks.amazonaws.com/token-expiration"
ANN_SKIP_CONTAINERS: Final = "eks.amazonaws.com/skip-containers"
WEB_IDENTITY_TOKEN_DIR: Final = "/var/run/secrets/eks.amazonaws.com/serviceaccount"
WEB_IDENTITY_TOKEN_PATH: Final = "token"
WEB_IDENTITY_VOLUME: Final = "aws-iam-token"

# Upstream Kubeflow object names (per tenant) and the ClusterRoles they bind.
SA_EDITOR: Final = "default-editor"
SA_VIEWER: Final = "default-viewer"
CLUSTERROLE_ADMIN: Final = "kubeflow-admin"
CLUSTERROLE_EDIT: Final = "kubeflow-edit"
CLUSTERROLE_VIEW: Final = "kubeflow-view"
ROLEBINDING_ADMIN: Final = "namespaceAdmin"
AUTHZ_OWNER: Final = "ns-owner-access-istio"
QUOTA_NAME: Final = "kf-resource-quota"
LIMITRANGE_NAME: Final = "default-resources"
ANN_BINDING_USER: Final = "user"  # on namespaceAdmin and contributor bindings/policies
ANN_BINDING_ROLE: Final = "role"
KUBEFLOW_NAMESPACE_LABELS: Final = {
    "app.kubernetes.io/part-of": "kubeflow-profile",
    "katib.kubeflow.org/metrics-collector-injection": "enabled",
    "serving.kubeflow.org/inferenceservice": "enabled",
    "pipelines.kubeflow.org/enabled": "true",
}
SCC_NONROOT_CLUSTERROLE: Final = "system:openshift:scc:nonroot"

# kftenancy components (ServiceAccount, ClusterRole and ClusterRoleBinding names).
COMPONENT_CONTROLLER: Final = "kftenancy-controller"
COMPONENT_WEBHOOK: Final = "kftenancy-webhook"
COMPONENT_GATEWAY: Final = "kftenancy-gateway"
PRIORITY_CLASS_PLACEHOLDER: Final = "kftenancy-gpu-placeholder"
# On the storage's pod template (`kftenancy datalake publish --restart`): the applied
# data-lake configuration's digest, so the storage rolls exactly when it changed.
ANN_DATALAKE_CONFIG_DIGEST: Final = f"{API_GROUP}/datalake-config-sha256"

# GPU capacity: Kueue (fair queues) and warm headroom (placeholder pods).
KUEUE_GROUP: Final = "kueue.x-k8s.io"
KUEUE_API: Final = f"{KUEUE_GROUP}/v1beta2"
LABEL_QUEUE_NAME: Final = f"{KUEUE_GROUP}/queue-name"
DEFAULT_FLAVOR: Final = "kftenancy-default"  # Kueue flavor of cpu/memory (no node labels)
LABEL_ACCELERATOR: Final = "cluster-api/accelerator"  # node-group template label (autoscaler)
LABEL_GPU_POOL: Final = f"{API_GROUP}/gpu-pool"  # on placeholder pods: the pool they warm
GPU_STATUS_CONFIGMAP: Final = "kftenancy-gpu-status"  # tenant-visible queue/quota status
