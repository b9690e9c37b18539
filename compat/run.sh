#!/usr/bin/env bash
# compat/run.sh VERSION...: runs the process-level suites against the etcd binary of each
# etcd minor VERSION (3.5, 3.6, 3.7), one package at a time, and prints a summary per version
# with pass or fail per package and the failed specs. make test-compat calls it (mk/compat.mk);
# the binaries must be built first (make etcd etcd-3.5 etcd-3.6).
#
# Environment (all optional):
#   GO                  the go command (go)
#   BIN                 where the binaries are and the logs go (./bin)
#   COMPAT_PKGS         the packages (the process-level suites below)
#   COMPAT_TESTFLAGS    flags for go test (-race -count=1 -v: make test's, and -v for the
#                       specs' report in the logs)
#   COMPAT_TIMEOUT      go test -timeout per package (15m)
#
# Logs: $BIN/compat/<version>/<package>.log, and the summary in $BIN/compat/summary.txt.
# Exit status: 1 when any package failed on any version.
set -uo pipefail
cd "$(dirname "$0")/.."

# All of it is in main, called on the last line with the exit: bash reads both before it
# runs them, so that a change to this file while a matrix runs cannot garble that run.
main() {
	GO=${GO:-go}
	BIN=${BIN:-$PWD/bin}
	# Only the specs of these packages that start etcdtest.NewProcesses/StartProcesses run the
	# binary under test; their other specs run the embedded etcd of go.mod's version (3.7).
	COMPAT_PKGS=${COMPAT_PKGS:-./test/sharding ./election/ ./lock/ ./source/ ./test/e2e/ ./test/finalizer/}
	COMPAT_TESTFLAGS=${COMPAT_TESTFLAGS:--race -count=1 -v}
	COMPAT_TIMEOUT=${COMPAT_TIMEOUT:-15m}

	if [ $# -eq 0 ]; then
		set -- 3.5 3.6 3.7
	fi

	binary() {
		case $1 in
		3.7) echo "$BIN/etcd" ;;
		*) echo "$BIN/etcd-$1" ;;
		esac
	}

	out=$BIN/compat
	mkdir -p "$out"
	summary=$out/summary.txt
	: >"$summary"
	passed=0
	failed=0

	for v in "$@"; do
		bin=$(binary "$v")
		if [ ! -x "$bin" ]; then
			echo "compat: $bin is missing: make etcd-$v (or make etcd for 3.7)" | tee -a "$summary"
			failed=$((failed + 1))
			continue
		fi
		served=$("$bin" --version 2>/dev/null | sed -n 's/^etcd Version: //p')
		case $served in
		"$v".*) ;;
		*)
			echo "compat: $bin serves etcd '$served', not $v.x" | tee -a "$summary"
			failed=$((failed + 1))
			continue
			;;
		esac
		mkdir -p "$out/$v"
		{
			echo
			echo "== etcd $served ($bin)"
		} | tee -a "$summary"
		for pkg in $COMPAT_PKGS; do
			name=$(echo "${pkg#./}" | sed 's:/*$::; s:/:-:g')
			log=$out/$v/$name.log
			start=$(date +%s)
			echo "-- etcd $served: go test $COMPAT_TESTFLAGS -p 1 $pkg (log: $log)"
			# -p 1: one package at a time, as make test runs ./test/sharding (its failover
			# assertions need the cores to themselves).
			# shellcheck disable=SC2086
			GINKGO_NO_COLOR=TRUE ETCDKIT_ETCD_BIN=$bin $GO test $COMPAT_TESTFLAGS -p 1 -timeout "$COMPAT_TIMEOUT" "$pkg" >"$log" 2>&1
			rc=$?
			secs=$(($(date +%s) - start))
			if [ $rc -eq 0 ]; then
				status=ok
				passed=$((passed + 1))
			else
				status=FAIL
				failed=$((failed + 1))
			fi
			# Ginkgo's count of the specs that ran ("Ran 5 of 5 Specs"), when -v shows it.
			ran=$(grep -Eo 'Ran [0-9]+ of [0-9]+ Specs' "$log" | tail -1)
			printf '  %-5s %-18s %4ss  %-22s %s\n' "$status" "$pkg" "$secs" "$ran" "$log" | tee -a "$summary"
			if [ $rc -ne 0 ]; then
				# Ginkgo's summary of the failed specs, or go's own failure lines.
				fails=$(grep -E '^\s*\[(FAIL|PANICKED|TIMEDOUT|INTERRUPTED)\]' "$log" | sed 's/^\s*//' | sort -u)
				if [ -z "$fails" ]; then
					fails=$(grep -E '^(--- FAIL|FAIL|panic:)' "$log" | head -5)
				fi
				echo "$fails" | sed 's/^/        /' | tee -a "$summary"
			fi
		done
	done

	echo
	echo "compat: $passed passed, $failed failed (summary: $summary)"
	[ "$failed" -eq 0 ]
}

main "$@"; exit
