"""Data lake: token → credentials → first object latency, and the time to apply the
storage configuration for many tenants.

    .venv/bin/python bench/datalake.py [--samples 200] [--tenants 1000] [--rounds 3]

Starts a local control plane (etcd + kube-apiserver) and a real SeaweedFS (S3 + STS)
trusting its issuer, like the integration tests, then:

1. latency: `--samples` times, for one of 10 tenants in turn: a TokenRequest for the
   tenant's workload service account, AssumeRoleWithWebIdentity with it (stock boto3),
   and the first GetObject with the temporary credentials (a fresh client each time, as
   a new pod would have). Prints p50/p99 of each step and of the whole chain.
2. apply: for `--tenants` tenants, the time to render the SeaweedFS IAM configuration
   (and the AWS role bundle), and to apply it: write + restart SeaweedFS until S3 answers,
   then until the last tenant's role can be assumed. `--rounds` rounds; the median is
   reported next to every round.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

import boto3
import botocore
from botocore.config import Config
from lightkube import Client, codecs
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from kftenancy.controllers.datalake import storage_configuration
from kftenancy.lab.cluster import LocalCluster
from kftenancy.lab.seaweedfs import SeaweedFS
from kftenancy.policy import TenancyPolicySpec, load_policy
from kftenancy.render.iam import role_arn_for

AUDIENCE = "sts.bench"
BUCKET = "datalake"
KEY = secrets.token_bytes(32)
BOTO = Config(
    signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}
)


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(values: list[float]) -> str:
    return (
        f"p50 {quantile(values, 0.5) * 1000:7.1f} ms  p99 {quantile(values, 0.99) * 1000:7.1f} ms"
    )


def tenant_names(n: int) -> list[str]:
    return [f"bench-{i:04d}" for i in range(n)]


def lake_policy(cluster: LocalCluster, sw: SeaweedFS) -> TenancyPolicySpec:
    return load_policy(
        {
            "dataLake": {
                "enabled": True,
                "provider": "s3compatible",
                "issuerUrl": cluster.issuer,
                "audience": AUDIENCE,
                "endpoint": sw.endpoint,
            }
        }
    )


def make_tenants(kube: Client, names: list[str]) -> None:
    for ns in names:
        kube.create(
            codecs.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        )
        kube.create(
            codecs.from_dict(
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default-editor", "namespace": ns},
                }
            )
        )


def token(kube: Client, ns: str) -> str:
    issued = kube.create(
        ServiceAccountToken(
            metadata=ObjectMeta(),
            spec=TokenRequestSpec(audiences=[AUDIENCE], expirationSeconds=600),
        ),
        "default-editor",
        namespace=ns,
    )
    return str(issued.status.token)


def assume(sw: SeaweedFS, role: str, tok: str) -> dict[str, Any]:
    sts = boto3.client(
        "sts",
        endpoint_url=sw.endpoint,
        region_name="us-east-1",
        config=BOTO.merge(Config(signature_version=botocore.UNSIGNED)),
    )
    creds: dict[str, Any] = sts.assume_role_with_web_identity(
        RoleArn=role, RoleSessionName="bench", WebIdentityToken=tok
    )["Credentials"]
    return creds


def latency(kube: Client, sw: SeaweedFS, policy: TenancyPolicySpec, samples: int) -> None:
    names = tenant_names(10)
    admin = boto3.client(
        "s3",
        endpoint_url=sw.endpoint,
        region_name="us-east-1",
        aws_access_key_id=sw.admin.access_key,
        aws_secret_access_key=sw.admin.secret_key,
        config=BOTO,
    )
    for ns in names:
        admin.put_object(Bucket=BUCKET, Key=f"{ns}/first.bin", Body=os.urandom(1024))
    steps: dict[str, list[float]] = {"TokenRequest": [], "AssumeRole": [], "GetObject": []}
    totals: list[float] = []
    for i in range(samples):
        ns = names[i % len(names)]
        t0 = time.perf_counter()
        tok = token(kube, ns)
        t1 = time.perf_counter()
        creds = assume(sw, role_arn_for(policy, ns), tok)
        t2 = time.perf_counter()
        s3 = boto3.client(
            "s3",
            endpoint_url=sw.endpoint,
            region_name="us-east-1",
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            config=BOTO,
        )
        s3.get_object(Bucket=BUCKET, Key=f"{ns}/first.bin")["Body"].read()
        t3 = time.perf_counter()
        steps["TokenRequest"].append(t1 - t0)
        steps["AssumeRole"].append(t2 - t1)
        steps["GetObject"].append(t3 - t2)
        totals.append(t3 - t0)
    print(f"token -> credentials -> first object ({samples} samples, 10 tenants)")
    for step, values in steps.items():
        print(f"  {step:<14} {ms(values)}")
    print(f"  {'whole chain':<14} {ms(totals)}")
    print(f"  chain without the TokenRequest (what a pod pays: kubelet mounts the token) "
          f"{ms([a + g for a, g in zip(steps['AssumeRole'], steps['GetObject'], strict=True)])}")  # fmt: skip


def apply_round(
    kube: Client, sw: SeaweedFS, policy: TenancyPolicySpec, names: list[str], last_token: str
) -> dict[str, float]:
    t0 = time.perf_counter()
    content = storage_configuration(policy, names, signing_key=KEY)
    t1 = time.perf_counter()
    storage_configuration(policy.model_copy(update={"data_lake": policy.data_lake.model_copy(
        update={"provider": "aws", "session_duration_seconds": 900})}), names, signing_key=None)  # fmt: skip
    t2 = time.perf_counter()
    sw.kill()  # apply() skips an unchanged configuration; a round always restarts
    sw.start(content)
    t3 = time.perf_counter()
    role = role_arn_for(policy, names[-1])
    while True:
        try:
            assume(sw, role, last_token)
            break
        except botocore.exceptions.ClientError:
            time.sleep(0.05)
    t4 = time.perf_counter()
    return {
        "render SeaweedFS": t1 - t0,
        "render AWS bundle": t2 - t1,
        "write + restart until S3 answers": t3 - t2,
        "until the last role assumes": t4 - t2,
        "bytes": float(len(content)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with LocalCluster() as cluster:
        kube = Client(config=KubeConfig.from_file(cluster.admin_kubeconfig), field_manager="bench")
        sw = SeaweedFS(ca_file=Path(cluster.ca_file), buckets=(BUCKET,))
        try:
            policy = lake_policy(cluster, sw)
            names = tenant_names(args.tenants)
            make_tenants(kube, names[:10] + ([names[-1]] if len(names) > 10 else []))
            sw.start(storage_configuration(policy, names[:10], signing_key=KEY))
            latency(kube, sw, policy, args.samples)
            print(f"load average: {os.getloadavg()}")
            last_token = token(kube, names[-1])
            rounds = [apply_round(kube, sw, policy, names, last_token) for _ in range(args.rounds)]
            print(f"apply the storage configuration for {args.tenants} tenants "
                  f"({rounds[0]['bytes'] / 1024:.0f} KiB SeaweedFS IAM file), {args.rounds} rounds")  # fmt: skip
            for key in rounds[0]:
                if key == "bytes":
                    continue
                values = [r[key] for r in rounds]
                shown = ", ".join(f"{v * 1000:.0f}" for v in values)
                print(f"  {key:<34} median {statistics.median(values) * 1000:7.0f} ms  ({shown})")
            print(f"load average after: {os.getloadavg()}")
        finally:
            sw.stop()


if __name__ == "__main__":
    main()
