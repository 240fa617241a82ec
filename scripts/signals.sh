# Passing a stop signal on to a command run in the background; sourced by scripts/common.sh and
# the Slurm batch files, not run.

SIGNALLED=0

forward_signals_to() {
    # forward_signals_to SIGNAL COMMAND...: run COMMAND in the background so that the SIGTERM,
    # SIGUSR1 or SIGINT this shell gets (Slurm's before a preemption or the time limit, or Ctrl-C:
    # a background command of a script ignores SIGINT) reaches it as SIGNAL; SIGNALLED is 1 then.
    # The training scripts save a checkpoint at their next step on it. Returns COMMAND's status.
    local signal=$1 child status
    shift
    "$@" &
    child=$!
    trap 'SIGNALLED=1; kill -'"$signal"' "$child" 2>/dev/null' TERM USR1 INT
    wait "$child"
    status=$?
    while kill -0 "$child" 2>/dev/null; do  # a trapped signal ends `wait` early
        wait "$child"
        status=$?
    done
    trap - TERM USR1 INT
    return "$status"
}

requeue_if_signalled() {
    # requeue_if_signalled WHAT STATUS: after forward_signals_to in a Slurm batch file, requeue
    # the job when a signal stopped it (it continues from its checkpoint) and exit 0; else exit
    # STATUS.
    if ((SIGNALLED)); then
        echo "$1 stopped by a signal (exit $2): requeued to continue from its checkpoint"
        scontrol requeue "$SLURM_JOB_ID" || echo "warning: could not requeue job $SLURM_JOB_ID: submit it again" >&2
        exit 0
    fi
    exit "$2"
}
