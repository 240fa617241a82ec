"""Where a run computes and where it writes.

The runtime of a process (device: CUDA, else MPS, else CPU; torch.distributed data parallel when
launched by torchrun; mixed precision), the start every script makes (output folders checked
before any work, the seed set), and the folders and files a run writes its results to.
"""

import contextlib
import fcntl
import json
import logging
import os
import random
import shutil
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import transformers

from utils.engine.checkpoints import (
    PARTIAL_PATTERN,
    TRAINING_STATE,
    checkpoints_in,
    disk_full_explained,
    tensor_bytes,
    verify_checkpoint,
)
from utils.engine.errors import UserError, release_at_exit

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Where and how this process computes."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def pad_multiple(self):
        """Batches are padded to a multiple of this many tokens (None: to the longest sequence): 8
        on CUDA, where tensor cores want multiples of 8 and ``--torch_compile`` then sees at most
        max_seq_length / 8 sequence lengths (it recompiles once with a dynamic length, after the
        second)."""
        return 8 if self.device.type == "cuda" else None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def barrier(self):
        if self.distributed:
            dist.barrier()

    def same_as_first(self, value):
        """``value`` as the first process has it (a picklable object), on every process."""
        if not self.distributed:
            return value
        shared = [value]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]


def setup_runtime(args):
    """Pick the device, join the process group under torchrun, set up logging and precision."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and not args.use_cpu
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif world_size == 1 and not args.use_cpu and torch.backends.mps.is_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        level=logging.INFO if rank == 0 else logging.WARNING,
    )
    transformers.utils.logging.disable_progress_bar()
    if rank != 0:
        transformers.utils.logging.set_verbosity_error()
    amp_dtype = None
    if args.fp16:
        if device.type != "cuda":
            raise UserError("--fp16 needs a CUDA GPU; on the CPU use --bf16")
        amp_dtype = torch.float16
    elif args.bf16:
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("--bf16 is not supported by this GPU; use --fp16")
        amp_dtype = torch.bfloat16
    return Runtime(device=device, rank=rank, world_size=world_size, amp_dtype=amp_dtype)


def start_run(args, command):
    """The start of every script: the runtime, the output folders checked before any work (and,
    when training, whether to resume: ``prepare_output_dir``), the seed set. ``command`` is the
    parsed command line as typed, ``args`` the options resolved from it. Returns ``(runtime,
    checkpoint to resume from or None)``."""
    runtime = setup_runtime(args)
    check_writable(args)
    folders = {Path(args.output_dir).resolve(): "--output_dir"}
    folders.setdefault(checkpoint_dir(args).resolve(), "--output_dir_intermed")  # once when it is the same
    for folder, option in folders.items():
        lock_output_dir(folder, runtime, option)
    resume = prepare_output_dir(args, command, runtime) if args.do_train else None
    if runtime.is_main:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    return runtime, resume


def set_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def move_to_device(batch, device):
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


# --------------------------------------------------------------------------- output folders

COMPLETION_MARK = "run_complete.json"
RUN_ARGS = "run_args.json"
# A run's results are the JSON files in its output folder whose names end so (eval_results.json,
# teacher_eval_results.json, predictions.json, nbest_predictions.json, ...): whatever writes a result
# names it so, and --overwrite_output_dir removes them, so that none of an old run's passes for the
# new run's.
RESULT_SUFFIXES = ("results.json", "predictions.json")
# the lock of the run that writes the folder (lock_output_dir)
LOCK_FILE = ".run.lock"
# where save_trained writes the model before moving it into the output folder
MODEL_PARTIAL = ".model.partial"
# what a start writes before its first checkpoint (and a checkpoint still being written when the
# run was killed): a folder holding only these is not a run yet
FAILED_START_FILES = {RUN_ARGS, "runs", "teacher_cache", LOCK_FILE}


def checkpoint_dir(args):
    """Where checkpoints and TensorBoard logs go: ``--output_dir_intermed`` where a script has
    it (the SQuAD and IMDB scripts), else output_dir."""
    return Path(getattr(args, "output_dir_intermed", None) or args.output_dir)


def _non_empty(directory):
    return directory.is_dir() and any(entry.name != LOCK_FILE for entry in directory.iterdir())


def _failed_start(directory):
    """Whether ``directory`` holds nothing but what a start writes before its first checkpoint."""
    return all(entry.name in FAILED_START_FILES or PARTIAL_PATTERN.match(entry.name)
               for entry in directory.iterdir()) if directory.is_dir() else True


def _remove_partial_checkpoints(directory):
    """Checkpoints a killed run was still writing: never whole, so never resumed from."""
    for entry in directory.iterdir() if directory.is_dir() else ():
        if PARTIAL_PATTERN.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True)


def lock_output_dir(output_dir, runtime, option="--output_dir"):
    """Hold ``<output_dir>/.run.lock`` (an advisory ``flock``, which the system releases when the
    process ends, however it ends) for as long as the script's ``main`` runs, and remove it then: a
    second run started into the same folder is refused in one line that names the process holding
    it, and the lock of a killed run blocks nothing. On a file system without locks, a warning."""
    if not runtime.is_main:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserError(f"{option} {output_dir} is in use by {holder}: wait for that run to end, or give "
                            f"another {option}") from None
        except OSError as error:  # a file system that does not lock
            logger.warning("cannot lock %s (%s): make sure no other run writes into it", output_dir, error)
            handle.close()
            return
        # the file may have been removed by the run that held it, between our open and our lock
        if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()} "
                 f"(started {datetime.now().isoformat(timespec='seconds')})\n")
    handle.flush()

    def release():
        path.unlink(missing_ok=True)  # while still holding it, so that no one locks a removed file
        handle.close()

    release_at_exit(release)


def is_complete(output_dir):
    """Whether ``output_dir`` holds a finished run (its completion mark, written last)."""
    return (Path(output_dir) / COMPLETION_MARK).is_file()


def mark_complete(output_dir, runtime, script, trained):
    """Write ``<output_dir>/run_complete.json``, the one sign that a run has finished, after every
    other file of the run (results, the saved model): the resume logic, the table scripts and
    ``collect_results.py`` take a run without it for unfinished. A run that did not train
    (evaluation or prediction only) does not mark a folder that holds an unfinished training run."""
    runtime.barrier()
    if not trained and checkpoints_in(output_dir) and not is_complete(output_dir):
        logger.info("%s holds an unfinished training run: not marked finished by this evaluation", output_dir)
        return
    if runtime.is_main:
        write_json(Path(output_dir) / COMPLETION_MARK,
                   {"script": script, "finished_at": datetime.now().isoformat(timespec="seconds")})


def check_writable(args):
    """Refuse an output folder (``--output_dir``, ``--output_dir_intermed``) that is a file or that
    cannot be written, before any model is loaded."""
    for option in ("output_dir", "output_dir_intermed"):
        folder = getattr(args, option, None)
        if not folder:
            continue
        path = Path(folder)
        existing = next((parent for parent in (path, *path.parents) if parent.exists()), None)
        if existing is not None and not existing.is_dir():
            raise UserError(f"--{option} {folder}: {existing} is a file, not a folder")
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"--{option} {folder}: {existing} cannot be written (permission denied)")


def changed_options(recorded, command):
    """``{option: (recorded value, value now)}`` for the options that change a run's numbers and
    differ: every option but those its definition declared ``neutral`` (``command.result_neutral``,
    ``utils.engine.cli.Command``). An option the record does not have (a run started by an older
    version) is not compared."""
    now, neutral = vars(command), getattr(command, "result_neutral", frozenset())
    aliases = getattr(command, "aliases", {})
    recorded = {aliases.get(key, key): value for key, value in recorded.items()}
    changes = {key: (recorded[key], now[key]) for key in sorted(set(recorded) & set(now))
               if key not in neutral and recorded[key] != now[key]}
    # --eval_steps defaults to --logging_steps: when it follows it, a new --logging_steps moves the
    # evaluations (and so LGTM's best student)
    if "eval_steps" in recorded and "eval_steps" not in changes:
        old, new = (values.get("eval_steps") or values.get("logging_steps") for values in (recorded, now))
        if old != new:
            changes["eval_steps (following --logging_steps)"] = (old, new)
    return changes


def check_resumed_command(args, command, checkpoint, runtime):
    """A resume continues the run its checkpoint belongs to: refuse a command that differs from
    the recorded one (``run_args.json``) in an option that changes the result, listing the
    differences, unless ``--allow_changed_args`` (then warn, and keep the old record beside the new)."""
    record = Path(args.output_dir) / RUN_ARGS
    if not record.is_file():
        return
    try:
        recorded = json.loads(record.read_text())
    except ValueError:
        raise UserError(f"{record} is not valid JSON: cannot tell whether this command continues that run") from None
    changes = changed_options(recorded, command)
    if not changes:
        return
    listed = "; ".join(f"--{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())
    if not getattr(command, "allow_changed_args", False):
        raise UserError(f"resuming {checkpoint} with options that differ from its run ({listed}); run the same "
                        "command, pass --allow_changed_args to continue with the new values, or "
                        "--overwrite_output_dir to start again")
    logger.warning("resuming %s with changed options: %s (the optimizer's and the schedule's state, their "
                   "learning rates included, continue from the checkpoint)", checkpoint, listed)
    if runtime.is_main:
        os.replace(record, record.with_name(f"run_args.before_{Path(checkpoint).name}.json"))


def prepare_output_dir(args, command, runtime):
    """Check the output folders before any work; return the checkpoint to resume from, or None.

    A folder holding a finished run (its completion mark) is refused unless
    ``--overwrite_output_dir`` is given (then its mark and checkpoints are removed, so that
    neither a resume nor a table takes the old run for the new one). A folder with checkpoints
    and no mark holds an interrupted run: training resumes from the last whole checkpoint
    (``whole_checkpoint``; with the same command, ``check_resumed_command``). A folder holding only
    what a failed start wrote (``run_args.json``, TensorBoard events, a checkpoint it was still
    writing) starts afresh. Anything else is refused.
    """
    output_dir, work_dir = Path(args.output_dir), checkpoint_dir(args)
    resume = None
    if args.resume_from_checkpoint:
        resume = Path(args.resume_from_checkpoint)
        if not (resume / TRAINING_STATE).is_file():
            raise UserError(f"--resume_from_checkpoint {resume}: not a checkpoint folder "
                            f"(no {TRAINING_STATE} in it)")
        problem = verify_checkpoint(resume, range(runtime.world_size))
        if problem is not None:
            raise UserError(f"--resume_from_checkpoint {resume}: the checkpoint is damaged ({problem})")
        check_resumed_command(args, command, resume, runtime)
        if runtime.is_main:  # the run goes on: it is unfinished until it writes its mark again
            (output_dir / COMPLETION_MARK).unlink(missing_ok=True)
    elif _non_empty(output_dir) or _non_empty(work_dir):
        checkpoints = checkpoints_in(work_dir)
        if args.overwrite_output_dir:
            if runtime.is_main:
                for checkpoint in checkpoints:
                    shutil.rmtree(checkpoint)
                _remove_partial_checkpoints(work_dir)
                # the old run's mark and results, which the new run might not write again
                (output_dir / COMPLETION_MARK).unlink(missing_ok=True)
                for result in output_dir.glob("*.json"):
                    if result.name.endswith(RESULT_SUFFIXES):
                        result.unlink()
                for old_record in output_dir.glob("run_args.before_*.json"):
                    old_record.unlink()
        elif is_complete(output_dir):
            raise UserError(f"output directory {output_dir} holds a finished run ({COMPLETION_MARK}); pass "
                            "--overwrite_output_dir to train again there, or choose another --output_dir")
        elif checkpoints:
            # every process resumes from the checkpoint the first one chose (or stops with its reason)
            resume, problem = runtime.same_as_first(_choose_checkpoint(checkpoints, runtime) if runtime.is_main
                                                    else None)
            if problem is not None:
                raise UserError(problem)
            check_resumed_command(args, command, resume, runtime)
            logger.info("resuming the interrupted run in %s from %s", work_dir, resume.name)
        elif _failed_start(output_dir) and _failed_start(work_dir):
            logger.info("%s holds only what an earlier start wrote before failing: starting afresh", output_dir)
        else:
            busy = output_dir if _non_empty(output_dir) else work_dir
            raise UserError(f"output directory {busy} is not empty; pass --overwrite_output_dir "
                            "to train again there, or choose another --output_dir")
    if runtime.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        work_dir.mkdir(parents=True, exist_ok=True)
        _remove_partial_checkpoints(work_dir)
    runtime.barrier()
    return resume


def _choose_checkpoint(checkpoints, runtime):
    """``(whole_checkpoint(...), None)``, or ``(None, why)`` when there is none."""
    try:
        return whole_checkpoint(checkpoints, runtime), None
    except UserError as error:
        return None, str(error)


def whole_checkpoint(checkpoints, runtime):
    """The newest of ``checkpoints`` (oldest first) that ``verify_checkpoint`` finds whole for
    every process of the run; each damaged one after it is named in a warning and moved aside to
    ``damaged-checkpoint-N`` (so that no later save or pruning takes it for a checkpoint). None
    whole: a UserError listing them."""
    damaged = []
    for checkpoint in reversed(checkpoints):
        problem = verify_checkpoint(checkpoint, range(runtime.world_size))
        if problem is None:
            if damaged:
                logger.warning("the latest checkpoint%s %s damaged (%s): resuming from %s, the newest whole one; "
                               "moved aside to %s", "s" if len(damaged) > 1 else "", "are" if len(damaged) > 1 else "is",
                               "; ".join(f"{path.name}: {why}" for path, why in damaged), checkpoint.name,
                               ", ".join(f"damaged-{path.name}" for path, _ in damaged))
                for path, _ in damaged:
                    aside = path.with_name(f"damaged-{path.name}")
                    while aside.exists():
                        aside = aside.with_name(aside.name + "-again")
                    os.replace(path, aside)
            return checkpoint
        damaged.append((checkpoint, problem))
    raise UserError(f"no checkpoint of the interrupted run in {checkpoints[0].parent} is whole ("
                    + "; ".join(f"{path.name}: {why}" for path, why in damaged)
                    + "): pass --overwrite_output_dir to start again")


def save_trained(model, tokenizer, output_dir, runtime, what="model", result=None):
    """``save_pretrained`` of the model and its tokenizer in ``output_dir`` (first process only);
    with a ``TrainResult``, log where it went and the mean training loss."""
    if not runtime.is_main:
        return
    output_dir = Path(output_dir)
    partial = output_dir / MODEL_PARTIAL
    shutil.rmtree(partial, ignore_errors=True)
    # written apart and moved in file by file when whole: a failed save leaves the model before it
    with disk_full_explained(output_dir, f"the {what}", tensor_bytes(model.state_dict()), cleanup=partial):
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    for path in sorted(partial.iterdir()):
        os.replace(path, output_dir / path.name)
    partial.rmdir()
    if result is not None:
        logger.info("saved the %s to %s (train loss %.4f)", what, output_dir, result.train_loss)


def write_json(path, values):
    Path(path).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
