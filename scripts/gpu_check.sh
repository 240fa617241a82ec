#!/usr/bin/env bash
# The whole GPU check in one prepared command: the correctness part, then the speed part, each
# under a time limit, each writing its table into OUTDIR (correctness.md, speed.md) and its log
# (correctness.log, speed.log). Each part prints its estimated time first, stops itself cleanly
# before a piece that would pass its --budget_s, and writes the table so far. The timeout here is
# the backstop: SIGTERM at the budget + 15 s (the part writes its table so far), SIGKILL 5 s later:
# at most 4 minutes a part.
#
#     bash scripts/gpu_check.sh OUTDIR            # on the GPU machine, from a fresh clone
#     PYTHON=python3 BUDGET_S=180 bash scripts/gpu_check.sh OUTDIR
#     bash scripts/gpu_check.sh OUTDIR --tiny     # the same on tiny models on a CPU (a test runs it)
#
# Arguments after OUTDIR go to both parts (python -m benchmarks.gpu_check --help).
#
# Exit status: 0 when both parts ran to the end, every correctness verdict ok and every speed
# configuration measured; 1 when a correctness verdict is NO, a speed configuration crashed, or a
# part stopped early (budget, SIGTERM) or failed; 2 on bad usage. The speed targets' verdicts are
# findings in speed.md, not failures.
set -uo pipefail

usage="usage: bash scripts/gpu_check.sh OUTDIR [ARGS...]   (environment: PYTHON, BUDGET_S per part, default 220)"
if [[ $# -lt 1 || $1 == -* ]]; then
    echo "$usage" >&2
    exit 2
fi
OUTDIR=$1
shift
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
BUDGET_S=${BUDGET_S:-220}
[[ $BUDGET_S =~ ^[0-9]+$ ]] || { echo "error: BUDGET_S=$BUDGET_S: a whole number of seconds" >&2; exit 2; }
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$OUTDIR" || { echo "error: cannot make $OUTDIR" >&2; exit 2; }
OUTDIR=$(cd "$OUTDIR" && pwd)

status=0
for part in correctness speed; do
    echo "== $part (budget ${BUDGET_S} s)"
    (cd "$REPO_DIR" && PYTHONUNBUFFERED=1 timeout --kill-after=5 $((BUDGET_S + 15)) \
        "$PYTHON" -m benchmarks.gpu_check "$part" --budget_s "$BUDGET_S" --out "$OUTDIR/$part.md" "$@") \
        2>&1 | tee "$OUTDIR/$part.log"
    code=${PIPESTATUS[0]}
    if [[ $code -ne 0 ]]; then
        echo "== $part: exit $code (see $OUTDIR/$part.log)"
        status=1
    fi
done
echo "== tables: $OUTDIR/correctness.md $OUTDIR/speed.md"
exit $status
