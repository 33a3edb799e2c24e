"""A real local Kubernetes control plane (etcd, kube-apiserver and optionally
kube-controller-manager, kube-scheduler and kwok) run as local processes, like
controller-runtime's envtest. Shared by the integration tests, `kftenancy lab` and the
benchmarks. The binaries are built from the Go module proxy by
`hack/build-control-plane.sh`; see docs/lab.md.
"""
