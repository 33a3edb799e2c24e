"""`LocalCluster`: etcd + kube-apiserver (+ kube-controller-manager, kube-scheduler and
kwok when asked) as local processes on random loopback ports, like controller-runtime's
envtest.

The API server runs RBAC, PodTolerationRestriction, an https service-account issuer on
its own address (whose discovery documents anyone may read, so that token verifiers such
as an S3 STS can fetch the JWKS), and trusts one CA for client certificates: the admin
kubeconfig is `system:masters`, `kubeconfig_for()` issues ordinary users. Each process
logs to `<workdir>/logs/<name>.log`; a failed start raises ControlPlaneError with the end
of the logs. `stop()` stops only the processes this object started.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import shutil
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import lightkube
from lightkube import codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Node, ServiceAccount

from kftenancy.certs import CertificateAuthority, service_account_key
from kftenancy.lab import kueue
from kftenancy.lab.binaries import KUEUE_MANIFESTS, KWOK_STAGES, ensure_binaries
from kftenancy.lab.errors import ControlPlaneError
from kftenancy.lab.kubeconfig import build_kubeconfig, write_kubeconfig, write_private
from kftenancy.lab.nodes import KWOK_NODE_ANNOTATION, KWOK_NODE_VALUE, gpu_node_manifest
from kftenancy.lab.processes import ManagedProcess, free_port, log_tail, rss_kib
from kftenancy.lab.stages import write_lab_stages

LAB_FIELD_MANAGER = "kftenancy-lab"
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"
ADMIN_USER = "kftenancy-lab-admin"
# Started in this order, stopped in the reverse one.
COMPONENT_ORDER = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kueue",
)


@dataclass(frozen=True)
class ServingCert:
    """A serving certificate signed by the cluster CA (for webhooks on 127.0.0.1).
    `ca_pem` is the `caBundle` to register with the API server."""

    cert_file: Path
    key_file: Path
    ca_pem: bytes


def apiserver_args(
    *,
    port: int,
    etcd_url: str,
    pki: Path,
    issuer: str,
    enable_admission_plugins: Sequence[str],
    disable_admission_plugins: Sequence[str],
    cert_dir: Path,
) -> list[str]:
    """kube-apiserver flags (see reference-facts.md, "The local control plane")."""
    args = [
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--etcd-servers={etcd_url}",
        f"--cert-dir={cert_dir}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={issuer}",
        f"--service-account-jwks-uri={issuer}/openid/v1/jwks",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--allow-privileged=true",
        "--profiling=false",
        # The kubernetes Service cannot have a loopback endpoint; nothing here needs one.
        "--endpoint-reconciler-type=none",
        "--enable-admission-plugins=" + ",".join(enable_admission_plugins),
    ]
    if disable_admission_plugins:
        args.append("--disable-admission-plugins=" + ",".join(disable_admission_plugins))
    return args


def admission_plugins(
    *, controller_manager: bool, enable: Sequence[str], disable: Sequence[str]
) -> tuple[list[str], list[str]]:
    """(enabled, disabled) admission plugins: PodTolerationRestriction on by default;
    the ServiceAccount plugin off when no controller-manager creates the `default`
    service accounts it insists on."""
    enabled = [p for p in ("PodTolerationRestriction", *enable) if p not in disable]
    disabled = list(dict.fromkeys([*disable, *([] if controller_manager else ["ServiceAccount"])]))
    return list(dict.fromkeys(enabled)), disabled


def user_file_stem(user: str, groups: Sequence[str]) -> str:
    """A file name for a user's kubeconfig: readable prefix plus a digest of the identity."""
    digest = hashlib.sha256(json.dumps([user, sorted(groups)]).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in user)[:40]
    return f"{safe}-{digest}"


class LocalCluster:
    """A local control plane. Use `start()`/`stop()` or `with LocalCluster(...) as c:`.

    etcd and kube-apiserver always run; `controller_manager`, `scheduler` and `kwok` add
    those components (kwok fakes nodes; add them with `add_gpu_node`).
    `enable_admission_plugins`/`disable_admission_plugins` adjust the plugin set
    (PodTolerationRestriction is on unless disabled). `workdir=None` uses a fresh
    temporary directory, removed by `stop()` unless `stop(keep_workdir=True)`.
    `die_with_parent` makes the processes exit when the starting thread dies (tests);
    `kftenancy lab up` turns it off so the cluster outlives the command.
    """

    def __init__(
        self,
        *,
        controller_manager: bool = False,
        scheduler: bool = False,
        kwok: bool = False,
        kueue: bool = False,
        enable_admission_plugins: Sequence[str] = (),
        disable_admission_plugins: Sequence[str] = (),
        workdir: Path | None = None,
        die_with_parent: bool = True,
        public_issuer_discovery: bool = True,
        start_timeout: float = 180.0,
    ) -> None:
        self.components = tuple(
            c
            for c, on in (
                ("etcd", True),
                ("kube-apiserver", True),
                ("kube-controller-manager", controller_manager),
                ("kube-scheduler", scheduler),
                ("kwok", kwok),
                ("kueue", kueue),
            )
            if on
        )
        self.enabled_plugins, self.disabled_plugins = admission_plugins(
            controller_manager=controller_manager,
            enable=enable_admission_plugins,
            disable=disable_admission_plugins,
        )
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kftenancy-lab-"))
        self.die_with_parent = die_with_parent
        self.public_issuer_discovery = public_issuer_discovery
        self.start_timeout = start_timeout
        self.processes: dict[str, ManagedProcess] = {}
        self.ports: dict[str, int] = {}
        self.log_files: dict[str, Path] = {}
        self._ca: CertificateAuthority | None = None
        self._users: dict[tuple[str, tuple[str, ...]], Path] = {}
        self._client: lightkube.Client | None = None
        self._last_tls_error: str | None = None
        self.started_seconds = 0.0

    # ------------------------------------------------------------------ paths

    @property
    def pki(self) -> Path:
        return self.workdir / "pki"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def issuer(self) -> str:
        """The service-account issuer (https, no trailing slash): the API server itself."""
        return self.server

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        """The CA that signed the API server's serving certificate (and client certs)."""
        return self.pki / "ca.crt"

    @property
    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            raise ControlPlaneError("the cluster has not been started")
        return self._ca

    # ------------------------------------------------------------- lifecycle

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(keep_workdir=exc is not None)

    def start(self) -> None:
        """Build missing binaries, then start every component and wait until it serves.
        Raises ControlPlaneError (with log tails) and leaves nothing running on failure."""
        binaries = ensure_binaries(tuple(self.components))
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        # Ports are picked free and then bound by the child: another program can win the
        # race, so a start that fails on a taken port is retried on new ports.
        for attempt in range(3):
            try:
                self._start_processes(binaries)
                break
            except ControlPlaneError as err:
                self._stop_processes()
                if attempt == 2 or "address already in use" not in str(err):
                    raise
            except BaseException:
                self._stop_processes()
                raise
        self.started_seconds = time.monotonic() - began

    def stop(self, *, keep_workdir: bool = False) -> None:
        """Stop the processes this object started (reverse order) and remove the
        temporary workdir unless `keep_workdir` (or the workdir was given)."""
        self._stop_processes()
        self._client = None
        if self._owns_workdir and not keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        elif self._owns_workdir:
            # Kept for its logs; etcd's data (a preallocated 64 MB WAL) is not worth keeping.
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)

    def _stop_processes(self) -> None:
        for name in reversed(COMPONENT_ORDER):
            proc = self.processes.pop(name, None)
            if proc is not None:
                proc.stop()

    def restart(self, component: str, *, hard: bool = False, down_seconds: float = 0.0) -> float:
        """Stop one running component (SIGTERM, or SIGKILL when `hard`) and start it again
        with the same flags, ports and data (etcd keeps its data directory), `down_seconds`
        later; returns once it serves again, with the seconds it was away (chaos tests)."""
        proc = self.processes.get(component)
        if proc is None:
            raise ControlPlaneError(f"{component} is not running in this cluster")
        began = time.monotonic()
        if hard and proc.popen is not None and proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait()
        proc.stop()
        time.sleep(down_seconds)
        on_main_thread = threading.current_thread() is threading.main_thread()
        proc.start(die_with_parent=self.die_with_parent and on_main_thread)
        checks: dict[str, Callable[[], bool]] = {
            "etcd": lambda: self._get_plain(f"http://127.0.0.1:{self.ports['etcd']}/health"),
            "kube-apiserver": lambda: self._get_tls(f"{self.server}/readyz"),
        }
        check = checks.get(component)
        if check is None and component in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://127.0.0.1:{self.ports[component]}/healthz"
            check = functools.partial(self._get_tls, url, verify=False)
        self._wait(component, time.monotonic() + self.start_timeout, check or (lambda: True))
        return time.monotonic() - began

    def _write_pki(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self._ca = ca = CertificateAuthority.create("kftenancy-lab-ca", now)
        write_private(self.pki / "ca.crt", ca.cert_pem)
        write_private(self.pki / "ca.key", ca.key_pem)
        serving = ca.issue(
            "kube-apiserver", now, server_hosts=["127.0.0.1", "localhost"], client=False
        )
        write_private(self.pki / "apiserver.crt", serving.cert_pem)
        write_private(self.pki / "apiserver.key", serving.key_pem)
        admin = ca.issue(ADMIN_USER, now, organizations=["system:masters"], client=True)
        write_private(self.pki / "admin.crt", admin.cert_pem)
        write_private(self.pki / "admin.key", admin.key_pem)
        sa_private, sa_public = service_account_key()
        write_private(self.pki / "sa.key", sa_private)
        write_private(self.pki / "sa.pub", sa_public)

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        proc = ManagedProcess(name=name, argv=argv, log_file=self.logs / f"{name}.log")
        # The kernel's parent-death signal follows the starting *thread*: from a worker
        # thread (asyncio.to_thread) it would kill the cluster when that thread ends.
        on_main_thread = threading.current_thread() is threading.main_thread()
        proc.start(die_with_parent=self.die_with_parent and on_main_thread)
        self.processes[name] = proc
        self.log_files[name] = proc.log_file
        return proc

    def _start_processes(self, binaries: Mapping[str, Path]) -> None:
        deadline = time.monotonic() + self.start_timeout
        # A retry starts on new ports: a client or kubeconfig of an earlier attempt would
        # still point at the old API server address (or at whatever listens there now).
        self._client = None
        self._users.clear()
        self._last_tls_error = None
        # Each port is picked right before its process binds it: a port picked at the
        # start sits unreserved while the API server comes up (a minute under load),
        # long enough for an ephemeral connection to take it.
        self.ports = {name: free_port() for name in ("etcd", "kube-apiserver")}
        etcd_peer = free_port()
        etcd_url = f"http://127.0.0.1:{self.ports['etcd']}"
        etcd_dir = self.workdir / "etcd"
        shutil.rmtree(etcd_dir, ignore_errors=True)
        self._spawn(
            "etcd",
            [
                str(binaries["etcd"]),
                "--name=kftenancy-lab",
                f"--data-dir={etcd_dir}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=kftenancy-lab=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", deadline, lambda: self._get_plain(f"{etcd_url}/health"))

        self._spawn(
            "kube-apiserver",
            [
                str(binaries["kube-apiserver"]),
                *apiserver_args(
                    port=self.ports["kube-apiserver"],
                    etcd_url=etcd_url,
                    pki=self.pki,
                    issuer=f"https://127.0.0.1:{self.ports['kube-apiserver']}",
                    enable_admission_plugins=self.enabled_plugins,
                    disable_admission_plugins=self.disabled_plugins,
                    cert_dir=self.workdir / "apiserver",
                ),
            ],
        )
        self._wait("kube-apiserver", deadline, lambda: self._get_tls(f"{self.server}/readyz"))
        self._write_admin_kubeconfig()
        if self.public_issuer_discovery:
            self._allow_public_issuer_discovery()

        kubeconfig = str(self.admin_kubeconfig)
        # No --authentication/authorization-kubeconfig: their own endpoints only need
        # /healthz, which is always allowed, and the delegation would look for a
        # front-proxy CA this cluster does not have.
        delegated = [
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        for name in ("kube-controller-manager", "kube-scheduler"):
            if name in self.components:
                self.ports[name] = free_port()
        if "kube-controller-manager" in self.components:
            self._spawn(
                "kube-controller-manager",
                [
                    str(binaries["kube-controller-manager"]),
                    *delegated,
                    f"--secure-port={self.ports['kube-controller-manager']}",
                    f"--cert-dir={self.workdir / 'kube-controller-manager'}",
                    f"--service-account-private-key-file={self.pki / 'sa.key'}",
                    f"--root-ca-file={self.ca_file}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    "--use-service-account-credentials=false",
                ],
            )
        if "kube-scheduler" in self.components:
            self._spawn(
                "kube-scheduler",
                [
                    str(binaries["kube-scheduler"]),
                    *delegated,
                    f"--secure-port={self.ports['kube-scheduler']}",
                    f"--cert-dir={self.workdir / 'kube-scheduler'}",
                ],
            )
        if "kwok" in self.components:
            self._spawn(
                "kwok",
                [
                    str(binaries["kwok"]),
                    f"--kubeconfig={kubeconfig}",
                    f"--config={write_lab_stages(binaries[KWOK_STAGES], self.workdir / 'kwok-stages.yaml')}",
                    "--manage-all-nodes=false",
                    f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_VALUE}",
                    "--node-ip=127.0.0.1",
                    f"--cidr={POD_CIDR}",
                    "--node-lease-duration-seconds=40",
                ],
            )
        for name in ("kube-controller-manager", "kube-scheduler"):
            if name in self.components:
                url = f"https://127.0.0.1:{self.ports[name]}/healthz"
                self._wait(name, deadline, functools.partial(self._get_tls, url, verify=False))
        if "kube-controller-manager" in self.components:
            # The controllers really run once the `default` service account exists.
            self._wait("kube-controller-manager", deadline, self._default_sa_exists)
        if "kwok" in self.components:
            # kwok has no health endpoint unless serving; a second alive is the check.
            time.sleep(1.0)
            self._wait("kwok", deadline, lambda: True)
        if "kueue" in self.components:
            self._start_kueue(binaries, deadline)

    def _start_kueue(self, binaries: Mapping[str, Path], deadline: float) -> None:
        """Kueue's CRDs (server-side apply), then Kueue with webhooks on 127.0.0.1, then
        the webhook configurations (only once it serves: they fail closed)."""
        manifests = binaries[KUEUE_MANIFESTS]
        self.install_crds(
            kueue.kueue_crds(manifests), timeout=max(10.0, deadline - time.monotonic())
        )
        self.client().apply(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": kueue.KUEUE_NAMESPACE},
                }
            ),
            force=True,
        )
        kueue.ensure_metrics_certs()
        cert = self.serving_cert("kueue-webhook")
        cert_dir = self.workdir / "kueue" / "certs"
        cert_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(cert.cert_file, cert_dir / "tls.crt")
        shutil.copy(cert.key_file, cert_dir / "tls.key")
        webhook_port, health_port, metrics_port = free_port(), free_port(), free_port()
        self.ports["kueue-webhook"] = webhook_port
        self.ports["kueue-health"] = health_port
        config = self.workdir / "kueue" / "config.yaml"
        config.write_text(
            kueue.kueue_config(
                webhook_port=webhook_port,
                health_port=health_port,
                metrics_port=metrics_port,
                cert_dir=cert_dir,
            )
        )
        self._spawn(
            "kueue",
            [
                str(binaries["kueue"]),
                f"--config={config}",
                f"--kubeconfig={self.admin_kubeconfig}",
                "--feature-gates=VisibilityOnDemand=false",
            ],
        )
        self._wait("kueue", deadline, lambda: kueue.ready(health_port))
        for doc in kueue.webhook_configurations(manifests, webhook_port, cert.ca_pem):
            self.client().apply(codecs.from_dict(doc), force=True)

    def _wait(self, name: str, deadline: float, ready: Callable[[], bool]) -> None:
        proc = self.processes[name]
        while True:
            code = proc.exit_code()
            if code is not None:
                raise ControlPlaneError(
                    f"{name} exited with status {code} while starting; end of "
                    f"{proc.log_file}:\n{log_tail(proc.log_file)}"
                )
            try:
                if ready():
                    return
            except (OSError, ApiError):
                pass
            if time.monotonic() > deadline:
                tls = self._last_tls_error
                hint = (
                    f"\nits TLS certificate did not verify against this cluster's CA ({tls}): "
                    f"another process replaced {self.pki} or serves on its port (two "
                    "`kftenancy lab up` on one state directory?)"
                    if tls
                    else ""
                )
                raise ControlPlaneError(
                    f"{name} did not become ready within {self.start_timeout:.0f}s{hint}; "
                    f"end of {proc.log_file}:\n{log_tail(proc.log_file)}"
                )
            time.sleep(0.25)

    # ---------------------------------------------------------- HTTP helpers

    def _ssl_context(self, verify: bool = True) -> ssl.SSLContext:
        if verify:
            # The CA in memory, the one every kubeconfig embeds, not the file: readiness
            # must mean "the clients we hand out can connect", even if the file changed.
            ctx = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        else:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    @staticmethod
    def _get_plain(url: str) -> bool:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)

    def _get_tls(self, url: str, verify: bool = True) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5, context=self._ssl_context(verify)) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return False
        except urllib.error.URLError as err:
            if isinstance(err.reason, ssl.SSLCertVerificationError):
                self._last_tls_error = str(err.reason)
            raise

    def _default_sa_exists(self) -> bool:
        try:
            self.client().get(ServiceAccount, "default", namespace="default")
        except ApiError as err:
            if err.status.code == 404:
                return False
            raise
        return True

    # --------------------------------------------------------- kubeconfigs

    def _write_admin_kubeconfig(self) -> None:
        write_kubeconfig(
            self.admin_kubeconfig,
            build_kubeconfig(
                server=self.server,
                ca_pem=self.ca.cert_pem,
                cert_pem=(self.pki / "admin.crt").read_bytes(),
                key_pem=(self.pki / "admin.key").read_bytes(),
                user=ADMIN_USER,
                context="kftenancy-lab",
            ),
        )

    def kubeconfig_for(self, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig authenticating as `user` in `groups` (a client certificate; the
        API server adds `system:authenticated`). Not `system:masters`: RBAC applies."""
        if "system:masters" in groups:
            raise ValueError("use admin_kubeconfig for system:masters")
        key = (user, tuple(sorted(groups)))
        if key not in self._users:
            pair = self.ca.issue(
                user, dt.datetime.now(dt.UTC), organizations=list(key[1]), client=True
            )
            path = self.workdir / "users" / f"{user_file_stem(user, groups)}.kubeconfig"
            self._users[key] = write_kubeconfig(
                path,
                build_kubeconfig(
                    server=self.server,
                    ca_pem=self.ca.cert_pem,
                    cert_pem=pair.cert_pem,
                    key_pem=pair.key_pem,
                    user=user,
                    context="kftenancy-lab",
                ),
            )
        return self._users[key]

    def serving_cert(
        self, name: str, hosts: Sequence[str] = ("127.0.0.1", "localhost")
    ) -> ServingCert:
        """A serving certificate for a local server the API server calls (webhooks)."""
        pair = self.ca.issue(name, dt.datetime.now(dt.UTC), server_hosts=list(hosts))
        stem = self.workdir / "serving" / name
        return ServingCert(
            cert_file=write_private(stem.with_suffix(".crt"), pair.cert_pem),
            key_file=write_private(stem.with_suffix(".key"), pair.key_pem),
            ca_pem=self.ca.cert_pem,
        )

    # ------------------------------------------------------------- objects

    def client(self) -> lightkube.Client:
        """A synchronous admin client (for setup; tests use lightkube AsyncClient)."""
        if self._client is None:
            self._client = lightkube.Client(
                config=KubeConfig.from_file(self.admin_kubeconfig), field_manager=LAB_FIELD_MANAGER
            )
        return self._client

    def _allow_public_issuer_discovery(self) -> None:
        self.client().apply(
            codecs.from_dict(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": "kftenancy-lab:service-account-issuer-discovery"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "ClusterRole",
                        "name": "system:service-account-issuer-discovery",
                    },
                    "subjects": [
                        {
                            "apiGroup": "rbac.authorization.k8s.io",
                            "kind": "Group",
                            "name": "system:unauthenticated",
                        }
                    ],
                }
            ),
            force=True,
        )

    def install_crds(self, crds: Iterable[Mapping[str, Any]], timeout: float = 60.0) -> list[str]:
        """Apply CustomResourceDefinitions and wait until each is Established; returns
        their names."""
        names: list[str] = []
        paths: list[str] = []
        for crd in crds:
            obj = codecs.from_dict(dict(crd))
            if not isinstance(obj, CustomResourceDefinition) or obj.metadata is None:
                raise ControlPlaneError(
                    f"not a CustomResourceDefinition: {crd.get('kind')} {crd.get('metadata')}"
                )
            self.client().apply(obj, force=True)
            names.append(str(obj.metadata.name))
            spec = crd["spec"]
            version = next(v["name"] for v in spec["versions"] if v.get("served", True))
            paths.append(f"/apis/{spec['group']}/{version}/{spec['names']['plural']}?limit=1")
        deadline = time.monotonic() + timeout
        for name in names:
            while not _crd_established(self.client().get(CustomResourceDefinition, name)):
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"CRD {name} not Established within {timeout:.0f}s")
                time.sleep(0.1)
        # Established is not yet served: a list right after can still get 429 or 404.
        for path in paths:
            while not self._get_tls(f"{self.server}{path}"):
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"{path} not served within {timeout:.0f}s")
                time.sleep(0.1)
        return names

    def add_gpu_node(
        self,
        name: str,
        gpus: int = 1,
        taints: Sequence[Mapping[str, str]] | None = None,
        labels: Mapping[str, str] | None = None,
        *,
        timeout: float = 60.0,
    ) -> Node:
        """Create a fake node managed by kwok with `gpus` nvidia.com/gpu and wait until
        it is Ready. `taints=None` gives it the seed policy's GPU taint
        (`workload=ai-ml:NoSchedule`); `[]` gives none."""
        if "kwok" not in self.components:
            raise ControlPlaneError("add_gpu_node needs LocalCluster(kwok=True)")
        manifest = gpu_node_manifest(name, gpus=gpus, taints=taints, labels=labels)
        self.client().create(codecs.from_dict(manifest))
        deadline = time.monotonic() + timeout
        while True:
            node = self.client().get(Node, name)
            conditions = node.status.conditions if node.status else None
            if any(c.type == "Ready" and c.status == "True" for c in conditions or []):
                return node
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"kwok did not make node {name} Ready within {timeout:.0f}s; end of kwok log:\n"
                    + log_tail(self.processes["kwok"].log_file)
                )
            time.sleep(0.2)

    # ---------------------------------------------------------- reporting

    def rss(self) -> dict[str, int]:
        """Resident memory (KiB) of each running component."""
        return {name: rss_kib(p.pid) for name, p in self.processes.items()}

    def log_report(self, lines: int = 30) -> str:
        """The end of every component's log (for failure reports)."""
        parts = [f"control-plane logs in {self.logs}"]
        for name, path in self.log_files.items():
            parts.append(f"--- {name} ({path}) ---\n{log_tail(path, lines)}")
        return "\n".join(parts)


def _crd_established(crd: CustomResourceDefinition) -> bool:
    conditions = crd.status.conditions if crd.status else None
    return any(c.type == "Established" and c.status == "True" for c in conditions or [])
