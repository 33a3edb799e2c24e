#!/usr/bin/env bash
# Builds the install tools the test suite runs (helm; operator-verify, the OLM bundle
# validator) and, when asked, the benchmarks' load generator (vegeta) from the Go module
# proxy into a cache keyed by module version:
#   ${KFTENANCY_CACHE:-$HOME/.cache/kftenancy}/bin/<module version>/<tool>
# Idempotent (a warm run takes well under a second). Versions are pinned in
# hack/helm/go.mod, hack/olm/go.mod and hack/vegeta/go.mod. A sibling of
# build-control-plane.sh, same rules.
# Usage: hack/build-tools.sh [--print-dir] [helm|operator-verify|vegeta ...]
#        (default: helm and operator-verify, what the test suite needs)
set -euo pipefail
HACK=$(cd "$(dirname "$0")" && pwd)
CACHE=${KFTENANCY_CACHE:-$HOME/.cache/kftenancy}

pinned() {  # pinned <go.mod> <module path> -> version
  awk -v m="$2" '$1 == m && $2 ~ /^v/ {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$1"
}
module_of() {
  case "$1" in helm) echo helm ;; operator-verify) echo olm ;; vegeta) echo vegeta ;; esac
}
mod_path_of() {
  case "$1" in
    helm) echo helm.sh/helm/v3 ;;
    operator-verify) echo github.com/operator-framework/api ;;
    vegeta) echo github.com/tsenart/vegeta/v12 ;;
  esac
}
pkg_of() {
  case "$1" in
    helm) echo helm.sh/helm/v3/cmd/helm ;;
    operator-verify) echo github.com/operator-framework/api/cmd/operator-verify ;;
    vegeta) echo github.com/tsenart/vegeta/v12 ;;
  esac
}
version_of() { pinned "$HACK/$(module_of "$1")/go.mod" "$(mod_path_of "$1")"; }

print_dir=false
want=()
for arg in "$@"; do
  case "$arg" in
    --print-dir) print_dir=true ;;
    helm|operator-verify|vegeta) want+=("$arg") ;;
    *) echo "usage: $0 [--print-dir] [helm|operator-verify|vegeta ...]" >&2; exit 2 ;;
  esac
done
[ ${#want[@]} -gt 0 ] || want=(helm operator-verify)

if $print_dir; then
  for t in "${want[@]}"; do echo "$t $CACHE/bin/$(version_of "$t")/$t"; done
  for t in "${want[@]}"; do
    [ "$t" != operator-verify ] || echo "olm-crds $CACHE/bin/$(version_of "$t")/olm-crds"
  done
  exit 0
fi

built() {  # built <tool>: the binary (and, for operator-verify, the OLM CRDs) is in the cache
  local dir
  dir="$CACHE/bin/$(version_of "$1")"
  [ -x "$dir/$1" ] || return 1
  [ "$1" != operator-verify ] || [ -s "$dir/olm-crds/operators.coreos.com_clusterserviceversions.yaml" ]
}

missing=()
for t in "${want[@]}"; do
  built "$t" || missing+=("$t")
done
[ ${#missing[@]} -gt 0 ] || exit 0

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed, and these tools are not built yet: ${missing[*]}" >&2
  echo "fix:   install Go 1.26 or newer so that 'go' is on PATH, then run: hack/build-tools.sh" >&2
  exit 3
fi

mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"   # the same lock as the control plane: one Go build at a time
flock 9

for t in "${missing[@]}"; do
  version=$(version_of "$t")
  dir="$CACHE/bin/$version"
  ! built "$t" || continue   # built by a concurrent run while we waited for the lock
  ldflags=(-s -w)
  [ "$t" != helm ] || ldflags+=(-X "helm.sh/helm/v3/internal/version.version=$version")
  [ "$t" != vegeta ] || ldflags+=(-X "main.Version=$version")
  mkdir -p "$dir"
  start=$SECONDS
  echo "building $t $version (CGO_ENABLED=0) ..." >&2
  if ! (cd "$HACK/$(module_of "$t")" && CGO_ENABLED=0 GOFLAGS=-mod=readonly \
        go build -trimpath -ldflags "${ldflags[*]}" -o "$dir/.$t.tmp" "$(pkg_of "$t")"); then
    rm -f "$dir/.$t.tmp"
    echo "error: building $t $version failed (see the go output above)" >&2
    exit 1
  fi
  mv "$dir/.$t.tmp" "$dir/$t"
  echo "built $dir/$t in $((SECONDS - start))s" >&2
  if [ "$t" = operator-verify ]; then
    # The operators.coreos.com CRDs of the same module version: the tests install them
    # into the lab to server-side dry-run the ClusterServiceVersion.
    src=$(cd "$HACK/olm" && go list -m -f '{{.Dir}}' github.com/operator-framework/api)/crds
    rm -rf "$dir/.olm-crds.tmp" && mkdir -p "$dir/.olm-crds.tmp"
    cp "$src"/operators.coreos.com_*.yaml "$dir/.olm-crds.tmp/"
    chmod u+w "$dir/.olm-crds.tmp"/*.yaml
    rm -rf "$dir/olm-crds" && mv "$dir/.olm-crds.tmp" "$dir/olm-crds"
  fi
done
