"""Command-line options shared by every script, and the options a run uses once resolved."""

import argparse
import json
import logging
import math
import re
from pathlib import Path

from utils.engine.errors import UserError

logger = logging.getLogger(__name__)


def str2bool(value):
    """Parse the value-taking booleans of the papers' commands (``--do_mask True``)."""
    if isinstance(value, bool):
        return value
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def bounded(kind, *, at_least=None, above=None, at_most=None, below=None, sentinel=None):
    """The argparse ``type`` of a numeric option: its range, declared where the option is
    defined. ``kind`` (int or float) of the text, finite, and within the bounds given; ``sentinel``
    (a value and what it means, e.g. ``(-1, "train --num_train_epochs")``) is accepted besides.
    A value outside is refused in one line before any work (``ArgumentParser.error``)."""
    bounds = [(at_least, "at least", lambda value, bound: value >= bound),
              (above, "above", lambda value, bound: value > bound),
              (at_most, "at most", lambda value, bound: value <= bound),
              (below, "below", lambda value, bound: value < bound)]
    given = [(bound, words, check) for bound, words, check in bounds if bound is not None]
    if [(bound, words) for bound, words, _ in given] == [(0, "at least")]:
        wanted = "must not be negative"
    elif len(given) == 2 and given[0][1] == "at least" and given[1][1] == "at most":
        wanted = f"must be between {given[0][0]} and {given[1][0]}"
    else:
        wanted = "must be " + " and ".join(f"{words} {bound}" for bound, words, _ in given)
    if sentinel is not None:
        wanted = f"must be {sentinel[0]} ({sentinel[1]}) or " + wanted[len("must be "):]

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}") from None
        if sentinel is not None and value == sentinel[0]:
            return value
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not all(check(value, bound) for bound, _, check in given):
            raise argparse.ArgumentTypeError(f"{wanted}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def add_flag(parser, *names, default=False, help=None, changes_results=True):
    """A boolean option usable both as ``--flag`` and as ``--flag True`` / ``--flag False``;
    ``changes_results`` as for ``neutral``."""
    action = parser.add_argument(*names, type=str2bool, nargs="?", const=True, default=default, help=help)
    return action if changes_results else neutral(action)


def neutral(action):
    """Declare the option ``action`` (what ``add_argument`` returned) one that changes no number a
    run computes (where files go, logging, checkpoint frequency, ...): an interrupted run may
    resume with another value of it. Every other option must be the same on resume
    (``utils.engine.runtime.changed_options``)."""
    action.changes_results = False
    return action


class Command(argparse.Namespace):
    """The command line as typed, and outside its values (``vars`` and ``run_args.json`` do not
    show them): ``result_neutral``, the options its parser declared ``neutral``, and ``aliases``,
    ``{other spelling: name}`` of the options spelled more ways than their name (a record written
    under an older name, ``teacher_model`` say, still compares)."""

    __slots__ = ("result_neutral", "aliases")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors reported as one line (and exit status 2) like every other user error;
    ``parse_args`` returns a ``Command``."""

    def error(self, message):
        # "argument --x/--alias: must be ..." (a bounded option) reads "--x must be ..."
        message = re.sub(r"^argument (--[\w-]+)(/--[\w-]+)*: (must )", r"\1 \3", message)
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        command = super().parse_args(args, Command() if namespace is None else namespace)
        if isinstance(command, Command):
            command.result_neutral = frozenset(action.dest for action in self._actions
                                               if not getattr(action, "changes_results", True))
            command.aliases = {spelling: action.dest for action in self._actions for option in action.option_strings
                               if (spelling := option.lstrip("-").replace("-", "_")) != action.dest}
        return command


def add_training_args(parser, *, batch_size, learning_rate, epochs, logging_steps=500, save_steps=500,
                      group_by_length=False, output_dir_intermed=False):
    """Options of the shared training loop; defaults are the released script's. With
    ``output_dir_intermed`` the script has ``--output_dir_intermed`` (checkpoints and logs apart)."""
    group = parser.add_argument_group("training")
    neutral(group.add_argument("--output_dir", required=True, help="where the model, results and checkpoints go"))
    if output_dir_intermed:
        neutral(group.add_argument("--output_dir_intermed", default=None,
                                   help="where checkpoints and TensorBoard logs go (default: output_dir)"))
    add_flag(group, "--overwrite_output_dir", help="start afresh in a non-empty output_dir", changes_results=False)
    add_flag(group, "--allow_changed_args", changes_results=False,
             help="resume an interrupted run with options that differ from its run_args.json (refused otherwise); "
                  "the optimizer's and the schedule's state, learning rates included, continue from the checkpoint")
    neutral(group.add_argument("--resume_from_checkpoint", default=None,
                               help="a checkpoint-N folder to resume from (default: the last one in output_dir)"))
    group.add_argument("--per_device_train_batch_size", "--per_gpu_train_batch_size", type=bounded(int, at_least=1),
                       default=batch_size, dest="per_device_train_batch_size")
    neutral(group.add_argument("--per_device_eval_batch_size", "--per_gpu_eval_batch_size", type=bounded(int, at_least=1),
                               default=None, dest="per_device_eval_batch_size",
                               help="default: the training batch size"))
    group.add_argument("--gradient_accumulation_steps", type=bounded(int, at_least=1), default=1)
    group.add_argument("--learning_rate", type=bounded(float, above=0), default=learning_rate)
    group.add_argument("--weight_decay", type=bounded(float, at_least=0), default=0.0)
    group.add_argument("--adam_epsilon", type=bounded(float, above=0), default=1e-8)
    group.add_argument("--max_grad_norm", type=bounded(float, at_least=0), default=1.0,
                       help="clip the gradient norm to this (0: no clipping)")
    group.add_argument("--num_train_epochs", type=bounded(float, above=0), default=epochs)
    group.add_argument("--max_steps", type=bounded(int, at_least=1, sentinel=(-1, "train --num_train_epochs")), default=-1,
                       help="total optimizer steps, overrides epochs (-1: train --num_train_epochs)")
    group.add_argument("--warmup_steps", type=bounded(int, at_least=0), default=0)
    group.add_argument("--warmup_ratio", type=bounded(float, at_least=0, at_most=1), default=0.0,
                       help="used when --warmup_steps is 0")
    group.add_argument("--lr_scheduler_type", default="linear",
                       choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                "constant_with_warmup"])
    group.add_argument("--seed", type=bounded(int, at_least=0, at_most=2**32 - 1), default=42)
    group.add_argument("--max_train_samples", type=bounded(int, at_least=1), default=None)
    group.add_argument("--max_eval_samples", type=bounded(int, at_least=1), default=None)
    neutral(group.add_argument("--max_predict_samples", type=bounded(int, at_least=1), default=None))
    neutral(group.add_argument("--logging_steps", type=bounded(int, at_least=1), default=logging_steps))
    neutral(group.add_argument("--save_steps", type=bounded(int, at_least=0), default=save_steps,
                               help="checkpoint every N steps (0: never)"))
    neutral(group.add_argument("--save_total_limit", type=bounded(int), default=2,
                               help="keep at most this many checkpoints (the newest; 0 or less: keep all)"))
    add_flag(group, "--evaluate_during_training", help="evaluate on dev every --eval_steps steps")
    group.add_argument("--eval_steps", type=bounded(int, at_least=1), default=None, help="default: --logging_steps")
    add_flag(group, "--fp16", help="float16 mixed precision (CUDA)")
    add_flag(group, "--bf16", help="bfloat16 mixed precision")
    add_flag(group, "--use_cpu", "--no_cuda", help="run on the CPU even when a GPU is present")
    add_flag(group, "--group_by_length", default=group_by_length,
             help="draw each batch from examples of similar length (less padding; changes batch composition; "
                  f"default {group_by_length})")
    add_flag(group, "--torch_compile",
             help="compile the trained model's forward and backward with torch.compile (the first steps are "
                  "slower while it compiles; static shapes with --pad_to_max_length avoid recompiling)")
    group.add_argument("--torch_compile_backend", default="inductor",
                       help="torch.compile backend (default inductor, which needs a C++ compiler on the CPU; "
                            "aot_eager needs none but runs no faster)")
    add_flag(group, "--pad_to_max_length",
             help="pad every batch to --max_seq_length as released (default: to the longest in the batch, rounded "
                  "up to a multiple of 8 on CUDA)")
    neutral(group.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "none"]))
    add_flag(group, "--disable_tqdm", changes_results=False)
    neutral(group.add_argument("--dataloader_num_workers", type=bounded(int, at_least=0), default=0))
    neutral(group.add_argument("--cache_dir", default=None, help="where hub downloads are cached"))
    neutral(group.add_argument("--local_rank", "--local-rank", type=bounded(int), default=-1,
                               help="set by old launchers; torchrun's LOCAL_RANK environment variable is used"))
    return group


def check_training_args(args):
    """Checks shared by every script that no option's own range (``bounded``) makes: something to
    do, one precision, a known torch.compile backend, a warning for a surprising learning rate."""
    stages = [name for name in ("do_train", "do_eval", "do_predict") if hasattr(args, name)]
    if not any(getattr(args, name) for name in stages):
        raise UserError("nothing to do: pass " + ", ".join(f"--{name}" for name in stages))
    if args.fp16 and args.bf16:
        raise UserError("--fp16 and --bf16 exclude each other; pass one")
    if args.torch_compile:
        import torch._dynamo

        backends = torch._dynamo.list_backends(exclude_tags=())
        if args.torch_compile_backend not in backends:
            raise UserError(f"--torch_compile_backend {args.torch_compile_backend}: unknown; choose one of "
                            + ", ".join(backends))
    if args.do_train and args.learning_rate >= 1e-2:
        logger.warning("--learning_rate %g is far above the 1e-5 .. 1e-4 that fine-tunes BERT-sized models; the "
                       "loss may diverge", args.learning_rate)


def resolved_options(command, **derived):
    """The options a run uses: a copy of ``command``, the parsed command line (which stays as
    typed: ``save_run_args`` records it), with the defaults that follow from other options filled
    in (``--per_device_eval_batch_size``: the training batch size; ``--eval_steps``:
    ``--logging_steps``) and the script's own ``derived`` values."""
    values = dict(vars(command))
    if values.get("per_device_eval_batch_size") is None:
        values["per_device_eval_batch_size"] = values["per_device_train_batch_size"]
    if values.get("eval_steps") is None:
        values["eval_steps"] = values["logging_steps"]
    values.update(derived)
    return argparse.Namespace(**values)


def save_run_args(command, output_dir):
    """Write the command line as typed (``parse_args``' namespace, before ``resolved_options``)
    to ``<output_dir>/run_args.json``: running the script again with these options repeats the run."""
    values = {key: value for key, value in vars(command).items() if key != "local_rank"}
    path = Path(output_dir) / "run_args.json"
    path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n")
