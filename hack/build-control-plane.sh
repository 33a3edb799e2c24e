#!/usr/bin/env bash
# Builds the local control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, kwok) and Kueue from the Go module proxy into a cache keyed by version:
#   ${KFTENANCY_CACHE:-$HOME/.cache/kftenancy}/bin/<module version>/<binary>
# Idempotent: binaries already in the cache are not rebuilt, so a warm run takes well
# under a second. Versions are the ones pinned in hack/{kube,etcd,kwok,kueue}/go.mod.
# Usage: hack/build-control-plane.sh [--print-dir] [binary ...]   (default: all)
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
CACHE=${KFTENANCY_CACHE:-$HOME/.cache/kftenancy}

pinned() {  # pinned <go.mod> <module path> -> version
  awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$1"
}
KUBE_VERSION=$(pinned "$HACK/kube/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(pinned "$HACK/etcd/go.mod" go.etcd.io/etcd/server/v3)
KWOK_VERSION=$(pinned "$HACK/kwok/go.mod" sigs.k8s.io/kwok)
KUEUE_VERSION=$(pinned "$HACK/kueue/go.mod" sigs.k8s.io/kueue)

print_dir=false
want=()
for arg in "$@"; do
  case "$arg" in
    --print-dir) print_dir=true ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|etcd|kwok|kueue) want+=("$arg") ;;
    *) echo "usage: $0 [--print-dir] [kube-apiserver|kube-controller-manager|kube-scheduler|etcd|kwok|kueue ...]" >&2; exit 2 ;;
  esac
done
[ ${#want[@]} -gt 0 ] || want=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok kueue)

version_of() {
  case "$1" in
    etcd) echo "$ETCD_VERSION" ;;
    kwok) echo "$KWOK_VERSION" ;;
    kueue) echo "$KUEUE_VERSION" ;;
    *) echo "$KUBE_VERSION" ;;
  esac
}

if $print_dir; then
  for b in "${want[@]}"; do echo "$b $CACHE/bin/$(version_of "$b")/$b"; done
  for b in "${want[@]}"; do
    [ "$b" != kwok ] || echo "kwok-stages $CACHE/bin/$KWOK_VERSION/kwok-stages.yaml"
    [ "$b" != kueue ] || echo "kueue-manifests $CACHE/bin/$KUEUE_VERSION/kueue-manifests"
  done
  exit 0
fi

built() {  # built <binary>: the binary (and, for kwok, its stages config) is in the cache
  local dir
  dir="$CACHE/bin/$(version_of "$1")"
  [ -x "$dir/$1" ] || return 1
  [ "$1" != kueue ] || [ -s "$dir/kueue-manifests/webhooks.yaml" ] || return 1
  [ "$1" != kwok ] || [ -s "$dir/kwok-stages.yaml" ]
}

missing=()
for b in "${want[@]}"; do
  built "$b" || missing+=("$b")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if ! command -v go >/dev/null 2>&1; then
  cat >&2 <<MSG
error: Go is not installed, and these control-plane binaries are not built yet: ${missing[*]}
fix:   install Go 1.26 or newer (https://go.dev/doc/install, or your package manager) so that
       'go' is on PATH, then run: hack/build-control-plane.sh
       (or set KFTENANCY_CACHE to a directory that already holds bin/<version>/<binary>)
MSG
  exit 3
fi

mkdir -p "$CACHE"
# One build at a time per cache (CI jobs and several worktrees share it).
exec 9>"$CACHE/.build.lock"
flock 9

build() {  # build <binary>
  local b=$1 version dir module pkg ldflags=(-s -w)
  version=$(version_of "$b")
  dir="$CACHE/bin/$version"
  ! built "$b" || return 0   # built by a concurrent run while we waited for the lock
  case "$b" in
    etcd) module=etcd; pkg=go.etcd.io/etcd/server/v3 ;;
    kwok) module=kwok; pkg=sigs.k8s.io/kwok/cmd/kwok
          ldflags+=(-X "sigs.k8s.io/kwok/pkg/consts.Version=${version#v}") ;;
    kueue) module=kueue; pkg=sigs.k8s.io/kueue/cmd/kueue
           ldflags+=(-X "sigs.k8s.io/kueue/pkg/version.GitVersion=$version") ;;
    *) module=kube; pkg=k8s.io/kubernetes/cmd/$b
       local minor=${version#v1.}; minor=${minor%%.*}
       ldflags+=(-X "k8s.io/component-base/version.gitVersion=$version"
                 -X "k8s.io/component-base/version.gitMajor=1"
                 -X "k8s.io/component-base/version.gitMinor=$minor"
                 -X "k8s.io/component-base/version.gitTreeState=clean"
                 -X "k8s.io/client-go/pkg/version.gitVersion=$version") ;;
  esac
  mkdir -p "$dir"
  local start=$SECONDS
  echo "building $b $version (CGO_ENABLED=0) ..." >&2
  if ! (cd "$HACK/$module" && CGO_ENABLED=0 GOFLAGS=-mod=readonly \
        go build -trimpath -ldflags "${ldflags[*]}" -o "$dir/.$b.tmp" "$pkg"); then
    rm -f "$dir/.$b.tmp"
    echo "error: building $b $version failed (see the go output above)" >&2
    exit 1
  fi
  mv "$dir/.$b.tmp" "$dir/$b"
  echo "built $dir/$b in $((SECONDS - start))s" >&2
  if [ "$b" = kueue ]; then
    # Kueue's CRDs and webhook configuration, from the same module version as the binary
    # (extracted, not committed: the Workload CRD alone is 1.4 MB, and a copy could drift
    # from the binary). The lab installs them with server-side apply.
    local src out="$dir/kueue-manifests"
    src=$(cd "$HACK/kueue" && go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)/config/components
    rm -rf "$out.tmp" && mkdir -p "$out.tmp/crds"
    cp "$src"/crd/bases/*.yaml "$out.tmp/crds/"
    cp "$src/webhook/manifests.yaml" "$out.tmp/webhooks.yaml"
    rm -rf "$out" && mv "$out.tmp" "$out"
  fi
  if [ "$b" = kwok ]; then
    # The kwok binary has no built-in stages (kwokctl passes them in a config file): take
    # the default ones (nodes become Ready with a lease heartbeat; scheduled pods become
    # Running; deletions complete) from the same module version.
    local src
    src=$(cd "$HACK/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage
    for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
             pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"
      cat "$src/$f"
    done > "$dir/.kwok-stages.yaml.tmp"
    mv "$dir/.kwok-stages.yaml.tmp" "$dir/kwok-stages.yaml"
  fi
}

for b in "${missing[@]}"; do build "$b"; done
