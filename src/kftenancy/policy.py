"""The `TenancyPolicy`: everything that varies between kftenancy installations.

A pydantic v2 model. Its defaults reproduce the seed recipe ("Operationalizing Kubeflow
in OpenShift"), with its holes closed. Field names are camelCase in YAML/JSON (the
Kubernetes convention) and snake_case in Python. The CRD's OpenAPI schema is generated
from this model (`kftenancy.crds`), never written by hand.

The model is frozen: the core treats a policy as a value, and the shell swaps in a new
one when the cluster's object changes.
"""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from kftenancy import constants as c

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[munkMGTPE])?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class Model(BaseModel):
    """Base for every policy section: camelCase aliases, unknown fields rejected, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=True,
    )


def _check_dns_label(value: str, what: str) -> str:
    if len(value) > 63 or not _DNS1123_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} is not a DNS-1123 label "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit, "
            "at most 63 characters)"
        )
    return value


def _check_quantities(values: dict[str, str]) -> dict[str, str]:
    for key, qty in values.items():
        if not _QUANTITY.match(str(qty)):
            raise ValueError(
                f"{key}: {qty!r} is not a Kubernetes quantity (for example 8, 500m, 16Gi)"
            )
    return values


def _check_header(value: str) -> str:
    if not _HEADER_NAME.match(value):
        raise ValueError(f"{value!r} is not a valid HTTP header name")
    return value.lower()


Quantities = Annotated[dict[str, str], Field(description="Resource name → quantity.")]

# ---------------------------------------------------------------------------- platform


class Flavor(StrEnum):
    OPENSHIFT = "openshift"
    KUBERNETES = "kubernetes"


class Platform(Model):
    """Where kftenancy runs."""

    flavor: Flavor = Field(
        default=Flavor.OPENSHIFT,
        description="openshift adds SCC bindings and reads OpenShift Users; kubernetes does not.",
    )
    namespace: str = Field(
        default="kftenancy", description="Namespace of kftenancy's own components."
    )
    kubeflow_namespace: str = Field(default="kubeflow", description="Kubeflow's namespace.")
    kubeflow_profile_controller: bool = Field(
        default=False,
        description=(
            "True when upstream Kubeflow's profile-controller runs: kftenancy then leaves it "
            "the objects it creates (namespace basics, namespaceAdmin, default-editor/viewer, "
            "ns-owner-access-istio, kf-resource-quota) and manages only the rest."
        ),
    )

    kubeflow_installed: bool = Field(
        default=True,
        description=(
            "True when Kubeflow itself is installed (it ships the Profile CRD and the "
            "kubeflow-admin/edit/view ClusterRoles). False makes kftenancy render those too."
        ),
    )

    _ns = field_validator("namespace", "kubeflow_namespace")(
        lambda v: _check_dns_label(v, "namespace")
    )

    @model_validator(mode="after")
    def _controller_needs_kubeflow(self) -> Platform:
        if self.kubeflow_profile_controller and not self.kubeflow_installed:
            raise ValueError(
                "kubeflowProfileController: true needs kubeflowInstalled: true "
                "(upstream's profile-controller is part of Kubeflow)"
            )
        return self


# ---------------------------------------------------------------------------- identity


class IdentityMethod(StrEnum):
    OIDC = "oidc"
    KUBERNETES_TOKEN = "kubernetesToken"
    TRUSTED_PROXY = "trustedProxy"


class TrustedProxy(Model):
    """Identity headers set by a login proxy (oauth-proxy, oauth2-proxy) in front of us.

    Honoured only when the request provably came through the proxy: it must carry the
    shared secret header (value from `secretRef`), which the gateway strips. Without a
    secret configured, trusted-proxy identity is off.
    """

    user_header: str = "x-forwarded-user"
    email_header: str = "x-forwarded-email"
    groups_header: str = "x-forwarded-groups"
    prefer_email: bool = Field(
        default=False, description="Use the email header as the user id when present."
    )
    secret_header: str = "x-kftenancy-proxy-secret"
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding the value the proxy sends in secretHeader."
    )

    _h = field_validator("user_header", "email_header", "groups_header", "secret_header")(
        lambda v: _check_header(v)
    )


class SecretKeyRef(Model):
    name: str
    key: str
    namespace: str | None = Field(default=None, description="Defaults to the kftenancy namespace.")


JWTAlgorithm = Literal[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
]


def _default_algorithms() -> list[JWTAlgorithm]:
    return ["RS256", "ES256"]


class OIDCIssuer(Model):
    """An OpenID Connect issuer whose bearer JWTs the gateway verifies itself."""

    issuer: str = Field(description="Exact `iss` value, e.g. https://login.example.com/realms/ml")
    jwks_uri: str | None = Field(
        default=None,
        description="JWKS URL; discovered from <issuer>/.well-known/openid-configuration if unset.",
    )
    audiences: list[str] = Field(min_length=1, description="Accepted `aud` values.")
    user_claim: str = "email"
    groups_claim: str = "groups"
    algorithms: list[JWTAlgorithm] = Field(
        default_factory=_default_algorithms,
        min_length=1,
        description="Accepted asymmetric algorithms; `none` and HMAC are never accepted.",
    )
    clock_skew_seconds: int = Field(default=30, ge=0, le=300)
    ca_bundle_ref: SecretKeyRef | None = None

    @field_validator("issuer", "jwks_uri")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("https://"):
            raise ValueError(f"{v!r} must be an https:// URL")
        return v


class ResourceRule(Model):
    """SubjectAccessReview resourceAttributes; the seed's rule is `get pods` in `kubeflow`."""

    verb: str = "get"
    group: str = ""
    resource: str = "pods"
    namespace: str | None = "kubeflow"
    name: str | None = None


class Authorization(Model):
    rule: ResourceRule = Field(default_factory=ResourceRule)
    allow_cache_seconds: int = Field(default=300, ge=0, le=3600)
    deny_cache_seconds: int = Field(default=10, ge=0, le=600)
    cache_size: int = Field(default=10_000, ge=0, le=1_000_000)


class IdentityToken(Model):
    """The short-lived JWT the gateway signs for backends (verifiable identity)."""

    enabled: bool = True
    header: str = "x-kftenancy-identity"
    audience: str = "kubeflow"
    issuer: str = Field(
        default="https://kftenancy-gateway.kftenancy.svc",
        description="`iss` of the identity JWT (its JWKS: <gateway>/.well-known/jwks.json).",
    )
    ttl_seconds: int = Field(default=300, ge=30, le=3600)

    _h = field_validator("header")(lambda v: _check_header(v))


class GatewayAPIRef(Model):
    """A Gateway API `Gateway` (Envoy Gateway) that calls the kftenancy gateway."""

    name: str
    namespace: str


class FrontDoor(Model):
    """Where the kftenancy gateway service runs, for the mesh/gateway configuration."""

    service: str = Field(
        default="kftenancy-gateway", description="Its Service (in platform.namespace)."
    )
    port: int = Field(default=8443, ge=1, le=65535)
    gateway_api: GatewayAPIRef | None = Field(
        default=None,
        description="Render Envoy Gateway's SecurityPolicy (extAuth) for this Gateway.",
    )


class OnboardingSource(StrEnum):
    GATEWAY = "gateway"
    OPENSHIFT_USERS = "openshiftUsers"


class Identity(Model):
    user_header: str = Field(default="kubeflow-userid", description="Header Kubeflow reads.")
    user_prefix: str = Field(default="", description="Prefix put before the user id.")
    groups_header: str = "kubeflow-groups"
    methods: list[IdentityMethod] = Field(
        default_factory=lambda: [
            IdentityMethod.TRUSTED_PROXY,
            IdentityMethod.OIDC,
            IdentityMethod.KUBERNETES_TOKEN,
        ],
        min_length=1,
        description="Order in which the gateway tries identity sources.",
    )
    trusted_proxy: TrustedProxy = Field(default_factory=TrustedProxy)
    oidc: list[OIDCIssuer] = Field(default_factory=list)
    authorization: Authorization = Field(default_factory=Authorization)
    identity_token: IdentityToken = Field(default_factory=IdentityToken)
    sign_in_url: str | None = Field(
        default=None, description="Where unauthenticated browsers are redirected."
    )
    front_door: FrontDoor = Field(default_factory=FrontDoor)
    onboarding: list[OnboardingSource] = Field(
        default_factory=lambda: [OnboardingSource.GATEWAY, OnboardingSource.OPENSHIFT_USERS],
        description="What creates a Profile for a new user.",
    )

    _h = field_validator("user_header", "groups_header")(lambda v: _check_header(v))


# ---------------------------------------------------------------------------- naming


class Naming(Model):
    """How a user id becomes a Profile/namespace name (see `kftenancy.naming`)."""

    prefix: str = Field(default="", description="Prepended to every tenant namespace name.")
    strip_email_domain: bool = Field(
        default=False,
        description="Drop '@domain' from the readable part (a hash still keeps names unique).",
    )
    fold_case: bool = Field(
        default=False,
        description="Treat user ids that differ only in letter case as the same user.",
    )
    reserved: list[str] = Field(
        default_factory=list, description="Extra names (fnmatch patterns) never produced."
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and (len(v) > 20 or not re.match(r"^[a-z0-9][-a-z0-9]*$", v)):
            raise ValueError(
                f"prefix {v!r} must be lowercase letters, digits and '-', start with a "
                "letter or digit, at most 20 characters"
            )
        return v


# ---------------------------------------------------------------------------- mesh


class MeshFlavor(StrEnum):
    OSSM = "ossm"  # OpenShift Service Mesh: ServiceMeshMember per namespace
    ISTIO = "istio"  # upstream Istio: injection label or revision label
    NONE = "none"


class ControlPlaneRef(Model):
    name: str = "basic"
    namespace: str = "istio-system"


class IngressGateway(Model):
    namespace: str = "istio-system"
    service_account: str = "istio-ingressgateway-service-account"
    labels: dict[str, str] = Field(
        default_factory=lambda: {"istio": "ingressgateway"},
        description="Selects the gateway pods (for its CUSTOM AuthorizationPolicy).",
    )


class Mesh(Model):
    flavor: MeshFlavor = MeshFlavor.OSSM
    control_plane_ref: ControlPlaneRef = Field(default_factory=ControlPlaneRef)
    revision: str | None = Field(
        default=None, description="Istio revision; sets istio.io/rev instead of istio-injection."
    )
    trust_domain: str = "cluster.local"
    ingress_gateway: IngressGateway = Field(default_factory=IngressGateway)
    ext_authz_timeout: str = Field(default="2s", pattern=r"^\d+(\.\d+)?(ms|s)$")
    header_forwarders: list[str] = Field(
        default_factory=lambda: ["ml-pipeline-ui"],
        description=(
            "ServiceAccounts in the Kubeflow namespace that forward a user's identity header "
            "to tenant services (upstream: the Pipelines UI); tenant policies trust them "
            "like the ingress gateway."
        ),
    )
    notebook_culler: str | None = Field(
        default="notebook-controller-service-account",
        description=(
            "ServiceAccount in the Kubeflow namespace allowed to GET */api/kernels of "
            "notebooks (idle culling); null disables the rule."
        ),
    )


# ---------------------------------------------------------------------------- resources


class LimitRangeDefaults(Model):
    default_request: Quantities = Field(default_factory=lambda: {"cpu": "200m", "memory": "100Mi"})
    default: Quantities = Field(
        default_factory=dict, description="Default limits (needed if the quota limits.*)."
    )

    _q = field_validator("default_request", "default")(_check_quantities)


class Resources(Model):
    quota: Quantities = Field(
        default_factory=lambda: {
            "cpu": "8",
            "memory": "16Gi",
            "requests.nvidia.com/gpu": "10",
            "persistentvolumeclaims": "10",
            "requests.storage": "200Gi",
        },
        description="Default hard quota; a Profile's resourceQuotaSpec overrides it.",
    )
    limit_range: LimitRangeDefaults = Field(default_factory=LimitRangeDefaults)

    _q = field_validator("quota")(_check_quantities)


# ---------------------------------------------------------------------------- GPU


class Toleration(Model):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None

    def manifest(self) -> dict[str, Any]:
        """The Kubernetes toleration dict (camelCase, unset fields omitted)."""
        return self.model_dump(by_alias=True, exclude_none=True)


class Taint(Model):
    key: str = "workload"
    value: str = "ai-ml"
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    def toleration(self) -> Toleration:
        return Toleration(key=self.key, operator="Equal", value=self.value, effect=self.effect)


def _automatic_tolerations() -> list[Toleration]:
    # The tolerations the cluster adds by itself; a whitelist must allow them or every pod
    # is rejected (kubernetes issue 64616).
    return [
        Toleration(
            key="node.kubernetes.io/not-ready",
            operator="Exists",
            effect="NoExecute",
            toleration_seconds=300,
        ),
        Toleration(
            key="node.kubernetes.io/unreachable",
            operator="Exists",
            effect="NoExecute",
            toleration_seconds=300,
        ),
        Toleration(
            key="node.kubernetes.io/memory-pressure", operator="Exists", effect="NoSchedule"
        ),
    ]


Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEEKDAYS: tuple[Weekday, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_CLOCK = r"^([01]\d|2[0-3]):[0-5]\d$"
GPUCount = Annotated[int, Field(ge=0)]


class HeadroomWindow(Model):
    """A time window (in `gpu.timeZone`) with its own minimum of warm GPUs."""

    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS[:5]), min_length=1, description="Week days."
    )
    start: str = Field(default="08:00", pattern=_CLOCK, description="HH:MM, inclusive.")
    end: str = Field(default="18:00", pattern=_CLOCK, description="HH:MM, exclusive.")
    minimum_gpus: int = Field(ge=0, description="Warm GPUs kept during the window.")

    @model_validator(mode="after")
    def _ordered(self) -> HeadroomWindow:
        if self.end <= self.start:
            raise ValueError(f"end {self.end!r} must be after start {self.start!r}")
        return self


class Headroom(Model):
    """Warm GPUs kept free in a pool (placeholder pods a real workload preempts at once):
    max(minimumGpus (or the active window's), ceil(percent of GPUs in use)), at most
    maximumGpus and never more than the pool has left."""

    percent: int = Field(default=20, ge=0, le=100, description="Of current GPU requests.")
    minimum_gpus: int = Field(default=1, ge=0)
    maximum_gpus: int | None = Field(
        default=None, ge=0, description="Ceiling; unset: the pool's size."
    )
    schedule: list[HeadroomWindow] = Field(
        default_factory=list,
        description="Windows with a different minimum (e.g. more on working hours).",
    )


class NodeShape(Model):
    """One node of a pool, as the autoscaler's node group template describes it."""

    gpus: int = Field(default=1, ge=1, description="GPUs per node.")
    cpu: str = "8"
    memory: str = "32Gi"

    _q = field_validator("cpu", "memory")(lambda v: _check_quantities({"quantity": v})["quantity"])


class GPUPool(Model):
    """A group of GPU nodes (a node group / MachineSet); a Kueue ResourceFlavor."""

    name: str = Field(description="Pool name; also the Kueue ResourceFlavor's name.")
    node_selector: dict[str, str] = Field(default_factory=lambda: {"workload": "ai-ml"})
    accelerator: str = Field(
        default="nvidia-t4",
        description="Value of the cluster-api/accelerator node label (ClusterAutoscaler gpus[].type).",
    )
    node: NodeShape = Field(default_factory=NodeShape)
    min_nodes: int = Field(default=0, ge=0)
    max_nodes: int = Field(default=4, ge=0, description="The node group's maximum size.")
    headroom: Headroom = Field(default_factory=Headroom)

    _n = field_validator("name")(lambda v: _check_dns_label(v, "pool name"))

    @property
    def gpus(self) -> int:
        """The pool's size in GPUs (maxNodes * node.gpus)."""
        return self.max_nodes * self.node.gpus

    @model_validator(mode="after")
    def _sizes(self) -> GPUPool:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"minNodes {self.min_nodes} is above maxNodes {self.max_nodes}")
        return self


class QueuePreemption(Model):
    """Kueue ClusterQueue preemption: by default an owner reclaims borrowed GPUs at once."""

    reclaim_within_cohort: Literal["Never", "LowerPriority", "Any"] = Field(
        default="Any", description="Preempt other tenants' borrowed workloads to get back quota."
    )
    within_cluster_queue: Literal["Never", "LowerPriority", "LowerOrNewerEqualPriority"] = (
        "LowerPriority"
    )
    borrow_within_cohort: Literal["Never", "LowerPriority"] = "Never"

    @model_validator(mode="after")
    def _kueue_rule(self) -> QueuePreemption:
        if self.reclaim_within_cohort == "Never" and self.borrow_within_cohort != "Never":
            raise ValueError("borrowWithinCohort needs reclaimWithinCohort other than Never")
        return self


class GPUQueues(Model):
    """Fair GPU sharing with Kueue: a ClusterQueue per tenant (nominal quota = its
    guarantee, borrowing within one cohort) and a LocalQueue in its namespace."""

    enabled: bool = False
    cohort: str = Field(default="kftenancy-gpu", description="The Kueue cohort all tenants share.")
    guarantee_gpus: dict[str, GPUCount] = Field(
        default_factory=dict, description="Pool → GPUs guaranteed to every tenant (default 0)."
    )
    tenants: dict[str, dict[str, GPUCount]] = Field(
        default_factory=dict, description="Tenant (Profile name) → pool → guaranteed GPUs."
    )
    borrowing_limit_gpus: int | None = Field(
        default=None, ge=0, description="GPUs a tenant may borrow beyond its guarantee; unset: any."
    )
    preemption: QueuePreemption = Field(default_factory=QueuePreemption)
    local_queue: str = Field(
        default="default",
        description="LocalQueue name; 'default' also catches jobs without a queue name.",
    )

    _c = field_validator("cohort", "local_queue")(lambda v: _check_dns_label(v, "name"))


class GPU(Model):
    enabled: bool = True
    taint: Taint = Field(default_factory=Taint)
    resource_name: str = "nvidia.com/gpu"
    allowed_tolerations: list[Toleration] = Field(
        default_factory=_automatic_tolerations,
        description=(
            "The tolerationsWhitelist of non-tenant namespaces: the cluster's automatic "
            "tolerations, never the GPU taint."
        ),
    )
    pools: list[GPUPool] = Field(default_factory=list)
    queues: GPUQueues = Field(default_factory=GPUQueues)
    time_zone: str = Field(
        default="UTC", description="IANA time zone of the headroom schedules (e.g. Europe/Paris)."
    )

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"{v!r} is not an IANA time zone (for example Europe/Paris)") from err
        return v

    def pool(self, name: str) -> GPUPool | None:
        return next((p for p in self.pools if p.name == name), None)

    @model_validator(mode="after")
    def _capacity(self) -> GPU:
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ValueError(f"pools: names must be unique (got {names})")
        q = self.queues
        entries = [(f"queues.guaranteeGpus.{k}", k, v) for k, v in q.guarantee_gpus.items()]
        for tenant, per_pool in q.tenants.items():
            entries += [(f"queues.tenants.{tenant}.{k}", k, v) for k, v in per_pool.items()]
        for where, flavor, gpus in entries:
            pool = self.pool(flavor)
            if pool is None:
                raise ValueError(
                    f"{where}: unknown flavor {flavor!r}: no GPU pool of that name "
                    f"(pools: {names or 'none'})"
                )
            if gpus > pool.gpus:
                raise ValueError(
                    f"{where}: guarantee of {gpus} GPUs is above the size of pool {flavor} "
                    f"({pool.gpus} GPUs = maxNodes {pool.max_nodes} x node.gpus {pool.node.gpus})"
                )
        return self

    @model_validator(mode="after")
    def _whitelist_excludes_gpu(self) -> GPU:
        for t in self.allowed_tolerations:
            if (
                t.key == self.taint.key
                and t.effect in (None, self.taint.effect)
                and (t.operator == "Exists" or t.value == self.taint.value)
            ):
                raise ValueError(
                    f"allowedTolerations must not tolerate the GPU taint "
                    f"{self.taint.key}={self.taint.value}:{self.taint.effect}"
                )
        return self


# ---------------------------------------------------------------------------- data lake


class InjectionMode(StrEnum):
    KFTENANCY = "kftenancy"  # our webhook injects token volume + env
    PLATFORM = "platform"  # the platform's pod-identity webhook does (OpenShift on AWS)


class SharedDataset(Model):
    """A read-only dataset (a bucket, optionally a prefix) every tenant may read."""

    bucket: str = Field(min_length=3, max_length=63)
    prefix: str = Field(default="", description="Key prefix; empty means the whole bucket.")


class DataLake(Model):
    enabled: bool = False
    provider: Literal["aws", "s3compatible"] = "aws"
    role_arn_template: str = Field(
        default="arn:aws:iam::123456789012:role/kubeflow-{namespace}",
        description="Per-tenant role; placeholders {namespace} and {profile}.",
    )
    oidc_provider_arn: str = Field(
        default="arn:aws:iam::123456789012:oidc-provider/oidc.example.com",
        description="The IAM OIDC provider for the cluster's service-account issuer.",
    )
    issuer_host_path: str = Field(
        default="oidc.example.com",
        description="Issuer URL without https://, the prefix of IAM condition keys.",
    )
    audience: str = "sts.amazonaws.com"
    token_expiration_seconds: int = Field(default=86400, ge=600, le=604800)
    region: str | None = "us-east-1"
    sts_regional_endpoints: bool = True
    service_accounts: list[str] = Field(
        default_factory=lambda: ["default-editor"],
        description="Tenant ServiceAccounts that get the role (and are trusted by it).",
    )
    bucket: str = "datalake"
    prefix_template: str = Field(default="{namespace}/", description="Tenant's key prefix.")
    injection: InjectionMode = InjectionMode.KFTENANCY
    shared_datasets: list[SharedDataset] = Field(
        default_factory=list,
        description="Read-only datasets every tenant's role may list and read.",
    )
    session_duration_seconds: int = Field(
        default=900,
        ge=1,
        le=43200,
        description=(
            "Lifetime of the temporary credentials STS hands out (s3compatible: the server's "
            "session length; aws: at least 900, the role's MaxSessionDuration is at least 3600)."
        ),
    )
    endpoint: str | None = Field(
        default=None,
        description=(
            "S3/STS endpoint URL of an S3-compatible store (injected as AWS_ENDPOINT_URL); "
            "unset on AWS."
        ),
    )
    issuer_url: str | None = Field(
        default=None,
        description="The service-account issuer URL; default https://{issuerHostPath}.",
    )
    jwks_uri: str | None = Field(
        default=None,
        description=(
            "Where the STS fetches the issuer's keys (s3compatible); default "
            "{issuerUrl}/openid/v1/jwks, the API server's path."
        ),
    )
    identity_provider_name: str = Field(
        default="kubernetes",
        description="s3compatible: the STS's name for the issuer (the trust's Federated principal).",
    )

    @property
    def issuer(self) -> str:
        return (self.issuer_url or f"https://{self.issuer_host_path}").rstrip("/")

    @property
    def jwks(self) -> str:
        return self.jwks_uri or f"{self.issuer}/openid/v1/jwks"

    @model_validator(mode="after")
    def _aws_duration(self) -> DataLake:
        if self.provider == "aws" and self.session_duration_seconds < 900:
            raise ValueError(
                f"sessionDurationSeconds {self.session_duration_seconds} is below AWS STS's "
                "minimum of 900 (provider aws)"
            )
        return self

    @field_validator("role_arn_template", "prefix_template")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        unknown = set(re.findall(r"{([^}]*)}", v)) - {"namespace", "profile"}
        if unknown:
            raise ValueError(
                f"{v!r} uses unknown placeholder(s) {sorted(unknown)}; allowed: {{namespace}}, {{profile}}"
            )
        return v


# ---------------------------------------------------------------------------- serverless


class Serverless(Model):
    enabled: bool = True
    system_namespace_labels: list[str] = Field(
        default_factory=lambda: [
            "serving.knative.openshift.io/system-namespace",
            "knative.openshift.io/system-namespace",
        ],
        description="Namespaces with any of these labels set to 'true' may reach tenant pods.",
    )
    system_namespaces: list[str] = Field(
        default_factory=lambda: ["knative-serving", "knative-serving-ingress"],
        description="Namespaces of the activator and the Knative ingress (mesh identity).",
    )
    probe_paths: list[str] = Field(
        default_factory=lambda: ["/healthz", "/metrics", "/wait-for-drain"]
    )


# ---------------------------------------------------------------------------- lifecycle


class Offboarding(Model):
    retention_days: int | None = Field(
        default=None,
        ge=0,
        description="Days an offboarded tenant's namespace is kept; unset keeps it forever.",
    )


class Isolation(Model):
    exempt_namespaces: list[str] = Field(
        default_factory=lambda: [
            "kube-*",
            "openshift",
            "openshift-*",
            "istio-system",
            "knative-*",
            "cert-manager",
            "nvidia-gpu-operator",
            "gpu-operator",
        ],
        description=(
            "fnmatch patterns of namespaces kftenancy never touches (no whitelist, no "
            "webhook); the kftenancy and Kubeflow namespaces are always exempt."
        ),
    )


# ---------------------------------------------------------------------------- the policy


class TenancyPolicySpec(Model):
    platform: Platform = Field(default_factory=Platform)
    identity: Identity = Field(default_factory=Identity)
    naming: Naming = Field(default_factory=Naming)
    mesh: Mesh = Field(default_factory=Mesh)
    resources: Resources = Field(default_factory=Resources)
    gpu: GPU = Field(default_factory=GPU)
    data_lake: DataLake = Field(default_factory=DataLake)
    serverless: Serverless = Field(default_factory=Serverless)
    offboarding: Offboarding = Field(default_factory=Offboarding)
    isolation: Isolation = Field(default_factory=Isolation)

    def is_exempt(self, namespace: str) -> bool:
        """True for namespaces kftenancy must leave alone (system, mesh, its own, Kubeflow)."""
        if namespace in (self.platform.namespace, self.platform.kubeflow_namespace):
            return True
        if self.mesh.flavor != MeshFlavor.NONE and namespace in (
            self.mesh.control_plane_ref.namespace,
            self.mesh.ingress_gateway.namespace,
        ):
            return True
        return any(fnmatch.fnmatchcase(namespace, p) for p in self.isolation.exempt_namespaces)


class ObjectMeta(Model):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)
    name: str = c.DEFAULT_POLICY_NAME


class TenancyPolicy(Model):
    """The whole custom resource (apiVersion/kind/metadata/spec)."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )
    api_version: Literal["kftenancy.dev/v1alpha1"] = "kftenancy.dev/v1alpha1"
    kind: Literal["TenancyPolicy"] = c.POLICY_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: TenancyPolicySpec = Field(default_factory=TenancyPolicySpec)


TrustedProxy.model_rebuild()


def load_policy(data: dict[str, Any] | None) -> TenancyPolicySpec:
    """Parse a TenancyPolicy document (whole object or bare spec) into its validated spec.

    Raises pydantic.ValidationError; `kftenancy.errors.describe_validation_error` turns it
    into a message that names the field, the value and what is allowed.
    """
    if not data:
        return TenancyPolicySpec()
    if "spec" in data or "kind" in data or "apiVersion" in data:
        return TenancyPolicy.model_validate(data).spec
    return TenancyPolicySpec.model_validate(data)
