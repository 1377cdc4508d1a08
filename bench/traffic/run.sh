#!/usr/bin/env bash
# Runs the data-path benchmark (main.go): three instances of a service on
# loopback, one 10× slower, called by name through the SDK's HTTP client
# with round robin and with peak EWMA, in interleaved rounds; prints
# throughput and p50/p99 per policy (medians).
#
# It builds first, into a temp dir, so no build runs while it measures;
# then pins the load generator to LOAD_CPU (default 0) with taskset, and
# the benchmark pins the upstreams' process (instances and control plane)
# to UPSTREAM_CPU (default 1). Bounded by -timeout (default 3m, the run
# takes about 30s). Extra arguments go to the benchmark, e.g.
# ./bench/traffic/run.sh -rounds 5 -workers 32.
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "building the benchmark into $tmp" >&2
go build -o "$tmp/traffic-bench" ./bench/traffic

load_cpu=${LOAD_CPU:-0}
upstream_cpu=${UPSTREAM_CPU:-1}
if [[ $(grep -c ^processor /proc/cpuinfo) -lt 2 ]]; then
	echo "one CPU only: running unpinned" >&2
	"$tmp/traffic-bench" -upstream-cpu -1 "$@"
	exit
fi
taskset -c "$load_cpu" "$tmp/traffic-bench" -upstream-cpu "$upstream_cpu" "$@"
