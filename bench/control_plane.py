"""Start-up time and memory of the local control plane (warm binaries).

    .venv/bin/python bench/control_plane.py [--runs N] [--minimal]

Prints, per run, the seconds until every component is ready (etcd and kube-apiserver
/readyz, controller-manager and scheduler /healthz, the `default` service account, kwok
up) and then the resident memory of each process after a short settle.
"""

from __future__ import annotations

import argparse
import statistics
import time

from kftenancy.lab.binaries import ensure_binaries
from kftenancy.lab.cluster import LocalCluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--minimal", action="store_true", help="etcd + kube-apiserver only")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before RSS")
    args = parser.parse_args()
    full = not args.minimal
    ensure_binaries()
    times = []
    for run in range(1, args.runs + 1):
        cluster = LocalCluster(controller_manager=full, scheduler=full, kwok=full)
        began = time.monotonic()
        cluster.start()
        if full:
            cluster.add_gpu_node("gpu-node-1", gpus=4)
        elapsed = time.monotonic() - began
        times.append(elapsed)
        time.sleep(args.settle)
        rss = cluster.rss()
        cluster.stop()
        rss_text = ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in rss.items())
        print(
            f"run {run}: ready in {elapsed:.1f}s; RSS {rss_text}; total {sum(rss.values()) / 1024:.0f} MiB"
        )
    print(
        f"start-up ({'full' if full else 'minimal'}): median {statistics.median(times):.1f}s, "
        f"min {min(times):.1f}s, max {max(times):.1f}s over {len(times)} runs"
    )


if __name__ == "__main__":
    main()
