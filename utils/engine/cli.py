"""Command-line options shared by every script, and the options a run uses once resolved."""

import argparse
import json
import logging
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
    """The command line as typed, and (``result_neutral``, outside its values: ``vars`` and
    ``run_args.json`` do not show it) the options its parser declared ``neutral``."""

    __slots__ = ("result_neutral",)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors reported as one line (and exit status 2) like every other user error;
    ``parse_args`` returns a ``Command``."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        command = super().parse_args(args, Command() if namespace is None else namespace)
        if isinstance(command, Command):
            command.result_neutral = frozenset(action.dest for action in self._actions
                                               if not getattr(action, "changes_results", True))
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
    group.add_argument("--per_device_train_batch_size", "--per_gpu_train_batch_size", type=int,
                       default=batch_size, dest="per_device_train_batch_size")
    neutral(group.add_argument("--per_device_eval_batch_size", "--per_gpu_eval_batch_size", type=int,
                               default=None, dest="per_device_eval_batch_size",
                               help="default: the training batch size"))
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--learning_rate", type=float, default=learning_rate)
    group.add_argument("--weight_decay", type=float, default=0.0)
    group.add_argument("--adam_epsilon", type=float, default=1e-8)
    group.add_argument("--max_grad_norm", type=float, default=1.0)
    group.add_argument("--num_train_epochs", type=float, default=epochs)
    group.add_argument("--max_steps", type=int, default=-1, help="if > 0: total optimizer steps, overrides epochs")
    group.add_argument("--warmup_steps", type=int, default=0)
    group.add_argument("--warmup_ratio", type=float, default=0.0, help="used when --warmup_steps is 0")
    group.add_argument("--lr_scheduler_type", default="linear",
                       choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                                "constant_with_warmup"])
    group.add_argument("--seed", type=int, default=42)
    group.add_argument("--max_train_samples", type=int, default=None)
    group.add_argument("--max_eval_samples", type=int, default=None)
    neutral(group.add_argument("--max_predict_samples", type=int, default=None))
    neutral(group.add_argument("--logging_steps", type=int, default=logging_steps))
    neutral(group.add_argument("--save_steps", type=int, default=save_steps, help="checkpoint every N steps (0: never)"))
    neutral(group.add_argument("--save_total_limit", type=int, default=2,
                               help="keep at most this many checkpoints (the newest; 0 or less: keep all)"))
    add_flag(group, "--evaluate_during_training", help="evaluate on dev every --eval_steps steps")
    group.add_argument("--eval_steps", type=int, default=None, help="default: --logging_steps")
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
    neutral(group.add_argument("--dataloader_num_workers", type=int, default=0))
    neutral(group.add_argument("--cache_dir", default=None, help="where hub downloads are cached"))
    neutral(group.add_argument("--local_rank", "--local-rank", type=int, default=-1,
                               help="set by old launchers; torchrun's LOCAL_RANK environment variable is used"))
    return group


def check_training_args(args):
    """Checks shared by every script: something to do, sizes at least 1, one precision, a known
    torch.compile backend."""
    stages = [name for name in ("do_train", "do_eval", "do_predict") if hasattr(args, name)]
    if not any(getattr(args, name) for name in stages):
        raise UserError("nothing to do: pass " + ", ".join(f"--{name}" for name in stages))
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "logging_steps", "eval_steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.fp16 and args.bf16:
        raise UserError("--fp16 and --bf16 exclude each other; pass one")
    if args.torch_compile:
        import torch._dynamo

        backends = torch._dynamo.list_backends(exclude_tags=())
        if args.torch_compile_backend not in backends:
            raise UserError(f"--torch_compile_backend {args.torch_compile_backend}: unknown; choose one of "
                            + ", ".join(backends))
    for name in ("max_train_samples", "max_eval_samples", "max_predict_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise UserError(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.do_train:
        check_schedule_args(args)


def check_schedule_args(args):
    """The training options that would train nothing, or fail after the run has started: refused in
    one line before any work; a legal but surprising value gets one warning."""
    if not args.learning_rate > 0:
        raise UserError(f"--learning_rate must be above 0, got {args.learning_rate}")
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        raise UserError(f"--num_train_epochs must be above 0 (or give --max_steps), got {args.num_train_epochs}")
    if not 0 <= args.warmup_ratio <= 1:
        raise UserError(f"--warmup_ratio must be between 0 and 1, got {args.warmup_ratio}")
    for name in ("warmup_steps", "save_steps", "weight_decay", "max_grad_norm"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name} must not be negative, got {getattr(args, name)}")
    if not args.adam_epsilon > 0:
        raise UserError(f"--adam_epsilon must be above 0, got {args.adam_epsilon}")
    if args.learning_rate >= 1e-2:
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
