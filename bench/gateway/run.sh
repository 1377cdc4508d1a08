#!/usr/bin/env bash
# Runs the API gateway benchmark (see README.md): Meridian's gateway beside
# nginx, HAProxy and Caddy as reverse proxies to one upstream on loopback.
#
# It installs the Debian packages it needs that are missing (nginx,
# haproxy, caddy, wrk), builds meridian, the upstream, the load generator
# and the benchmark into a temp dir first, so that no build of its own runs
# while it measures, raises the open-files limit for the 10,000-connection
# memory figure, and runs the benchmark. Everything it writes goes under
# one mktemp dir, which it keeps (without the binaries) for the results
# file and the logs; on exit it ends any process the benchmark started
# that is still running.
#
#   ./bench/gateway/run.sh                       # the full run, about 11 minutes
#   ./bench/gateway/run.sh --quick               # about 3 minutes
#   ./bench/gateway/run.sh --only nginx,haproxy  # some systems only
#
# Extra arguments go to the benchmark (./bench/gateway/run.sh -h lists
# them). MERIDIAN_BIN=/path/to/meridian uses that binary instead of
# building ./cmd/meridian.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Which systems run decides which packages and builds are needed.
only=""
prev=""
for a in "$@"; do
	case $a in
	-only=* | --only=*) only=${a#*=} ;;
	esac
	if [[ $prev == -only || $prev == --only ]]; then only=$a; fi
	prev=$a
done
wants() { [[ -z $only || ,$only, == *,$1,* ]]; }
wants_meridian() { wants meridian || wants meridian-plain || wants meridian-full; }

missing=()
command -v wrk >/dev/null || missing+=(wrk)
for p in nginx haproxy caddy; do
	if wants "$p" && ! command -v "$p" >/dev/null && ! [[ -x /usr/sbin/$p ]]; then missing+=("$p"); fi
done
if ((${#missing[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "missing: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
		exit 1
	fi
	echo "installing ${missing[*]} with apt-get" >&2
	install() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends "${missing[@]}" >&2; }
	install || { apt-get -o DPkg::Lock::Timeout=300 update >&2 && install; }
fi
export PATH=$PATH:/usr/sbin

# 10,000 client connections in the benchmark, as many server-side in the
# proxy: each process needs room for them.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-gateway.XXXXXX")
cleanup() {
	# Any process group the benchmark started and did not stop (it was
	# killed, say), recognised by the work dir in its command line.
	if [[ -f $work/pids ]]; then
		while read -r pid; do
			if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$work"; then
				kill -TERM -- "-$pid" 2>/dev/null || true
				sleep 1
				kill -KILL -- "-$pid" 2>/dev/null || true
			fi
		done <"$work/pids"
	fi
	rm -rf "$work/bin"
}
trap cleanup EXIT

echo "building into $work/bin" >&2
mkdir -p "$work/bin"
go build -o "$work/bin/upstream" ./bench/gateway/upstream
go build -o "$work/bin/loadgen" ./bench/gateway/loadgen
go build -o "$work/bin/gateway-bench" ./bench/gateway
meridian=()
if wants_meridian; then
	if [[ -n ${MERIDIAN_BIN:-} ]]; then
		meridian=(-meridian-bin "$MERIDIAN_BIN")
	elif go build -o "$work/bin/meridian" ./cmd/meridian 2>"$work/meridian-build.log"; then
		meridian=(-meridian-bin "$work/bin/meridian")
	else
		echo "go build ./cmd/meridian failed; Meridian will not be measured (see $work/meridian-build.log)" >&2
		meridian=(-meridian-missing "go build ./cmd/meridian failed: $(head -c 300 "$work/meridian-build.log" | tr '\n' ' ')")
	fi
fi

status=0
"$work/bin/gateway-bench" -dir "$work" -upstream-bin "$work/bin/upstream" -loadgen-bin "$work/bin/loadgen" \
	"${meridian[@]}" "$@" || status=$?
exit "$status"
