#!/usr/bin/env bash
# Runs the control-plane registry benchmark (see README.md): builds the
# meridian binary, the etcd peer and the benchmark into a temp dir first,
# so that no build runs while it measures, then runs it. Extra arguments go
# to the benchmark, e.g. ./bench/registry/run.sh -rounds 1.
#
# MERIDIAN_BIN=/path/to/meridian uses that binary instead of building
# ./cmd/meridian.
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

meridian_bin=${MERIDIAN_BIN:-}
if [[ -z $meridian_bin ]]; then
	echo "building meridian, etcdpeer and the benchmark into $tmp" >&2
	go build -o "$tmp/meridian" ./cmd/meridian
	meridian_bin=$tmp/meridian
fi
go build -o "$tmp/etcdpeer" ./bench/registry/etcdpeer
go build -o "$tmp/registry-bench" ./bench/registry

"$tmp/registry-bench" -meridian-bin "$meridian_bin" -etcd-bin "$tmp/etcdpeer" "$@"
