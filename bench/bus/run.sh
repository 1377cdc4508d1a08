#!/usr/bin/env bash
# Runs the event bus benchmark (see README.md): builds the NATS server
# (natsd) and the benchmark into a temp dir first, so that no build runs
# while it measures, then runs it: the server pinned to CPU 1, the client
# to CPU 0, on loopback, bounded by `timeout`. Extra arguments go to the
# benchmark, e.g. ./bench/bus/run.sh -rounds 1 -events 20000.
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "building natsd and the benchmark into $tmp" >&2
go build -o "$tmp/natsd" ./bench/bus/natsd
go build -o "$tmp/bus-bench" ./bench/bus

timeout 900 "$tmp/bus-bench" -natsd "$tmp/natsd" "$@"
