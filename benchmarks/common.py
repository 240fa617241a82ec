"""What the benchmarks share: models built from configs, a WordPiece tokenizer trained on the
benchmark's sentences, and ``LoopStep``, a training step of ours made of the loop's own pieces
(``utils.engine.loop.backward_micro_batch`` and ``utils.engine.loop.optimizer_step``) around a script's
``compute_loss`` and ``micro_batch_hook``."""

import functools
from types import SimpleNamespace

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from utils.engine.loop import backward_micro_batch, compiled, make_optimizer, make_scheduler, optimizer_step

MAX_GRAD_NORM = 1.0  # the scripts' default --max_grad_norm
# The one-to-one paper's README command: alpha_glue 0.5, alpha_corr 0.005, --do_mask True
PAPER_LOSS = dict(alpha_task=0.5, alpha_ce=0.0, alpha_corr=0.005, alpha_mse=0.0, alpha_cos=0.0, do_mask=True)


def build_tokenizer(sentences, vocab_size):
    """A BERT WordPiece tokenizer whose vocabulary is trained on ``sentences``; trained once per
    process for the same sentences and size (the GPU check asks for it once per configuration)."""
    return _trained_tokenizer(tuple(sentences), vocab_size)


@functools.lru_cache(maxsize=4)
def _trained_tokenizer(sentences, vocab_size):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(sentences, vocab_size=vocab_size, show_progress=False)
    return BertTokenizer(vocab=trainer.get_vocab(), do_lower_case=True)


def add_model_shape_args(parser, *, vocab_size=8000, vocab_help=None, heads=True, hidden_help=None):
    """The benchmarks' model shape options: ``--hidden``, ``--heads`` (where ``heads``),
    ``--teacher_layers``, ``--student_layers`` and ``--vocab_size``, read by ``build_models``."""
    parser.add_argument("--hidden", type=int, default=384, help=hidden_help)
    if heads:
        parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--teacher_layers", type=int, default=6)
    parser.add_argument("--student_layers", type=int, default=3)
    parser.add_argument("--vocab_size", type=int, default=vocab_size, help=vocab_help)


def bert(vocab_size, hidden, heads, num_layers, device, num_labels=2):
    """A randomly initialised BERT classifier, built on ``device`` (a BERT-base made on the CPU and
    moved to a GPU costs seconds)."""
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=num_layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden, num_labels=num_labels)
    with torch.device(device):
        return BertForSequenceClassification(config)


def distilbert(vocab_size, hidden, heads, num_layers, device, num_labels=2):
    """A randomly initialised DistilBERT classifier, built on ``device``."""
    config = DistilBertConfig(vocab_size=vocab_size, dim=hidden, n_layers=num_layers, n_heads=heads,
                              hidden_dim=4 * hidden, num_labels=num_labels)
    with torch.device(device):
        return DistilBertForSequenceClassification(config)


def build_models(args, vocab_size, device):
    """A frozen BERT teacher (``args.teacher_layers``) and a DistilBERT student
    (``args.student_layers``) of width ``args.hidden`` with ``args.heads`` heads, seeded alike."""
    torch.manual_seed(0)
    teacher = bert(vocab_size, args.hidden, args.heads, args.teacher_layers, device)
    student = distilbert(vocab_size, args.hidden, args.heads, args.student_layers, device)
    return teacher.eval().requires_grad_(False), student.train()


def zero_classifier(model):
    """``--init_classifier_to_zero``."""
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    return model


def training_options(learning_rate, total_steps):
    """The scripts' training options that the loop's optimizer and schedule read, at their defaults."""
    return SimpleNamespace(learning_rate=learning_rate, weight_decay=0.0, adam_epsilon=1e-8, warmup_steps=0,
                           warmup_ratio=0.0, lr_scheduler_type="linear", max_steps=total_steps)


class LoopStep:
    """One optimizer step of ours on one micro-batch, as ``utils.engine.loop.train`` takes it: the
    method's ``micro_batch_hook`` and ``compute_loss`` under the runtime's autocast, the backward,
    then the clipped AdamW step (``make_optimizer``: fused AdamW) and the linear schedule of
    ``total_steps``. ``mark(phase)`` is called after the backward ("fwd+bwd") and after the
    optimizer step ("optim"). ``compile_backend``: the trained model's forward compiled with that
    torch.compile backend, as the scripts' ``--torch_compile`` does (``utils.engine.loop.compiled``)."""

    def __init__(self, model, runtime, learning_rate, total_steps, compile_backend=None):
        options = training_options(learning_rate, total_steps)
        self.model, self.runtime = model, runtime
        self.forward_model = compiled(model, SimpleNamespace(torch_compile=compile_backend is not None,
                                                             torch_compile_backend=compile_backend))
        self.optimizer = make_optimizer(model, options)
        self.scheduler = make_scheduler(self.optimizer, options, total_steps)
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16)

    def __call__(self, compute_loss, batch, mark, micro_batch_hook=None):
        backward_micro_batch(compute_loss, self.forward_model, batch, runtime=self.runtime, scaler=self.scaler,
                             accumulation=1, micro_batch_hook=micro_batch_hook)
        mark("fwd+bwd")
        optimizer_step(self.model, self.optimizer, self.scheduler, self.scaler, MAX_GRAD_NORM)
        mark("optim")


class QuizSource:
    """The quiz batches of a benchmark's ``utils.methods.lgtm.TeacherStep``: ``quiz_batches.next()``
    (``utils.methods.lgtm.QuizBatches``), or without it the batch set as ``batch`` (the training batch
    itself, or one fixed quiz batch); ``last`` is the batch given last (for FLOP counts)."""

    def __init__(self, quiz_batches=None, batch=None):
        self.quiz_batches, self.batch, self.last = quiz_batches, batch, None

    def next(self):
        self.last = self.batch if self.quiz_batches is None else self.quiz_batches.next()
        return self.last


def marked(function, mark, before, after):
    """``function`` that calls ``mark(before)`` when called and ``mark(after)`` when it returns:
    the time of a call inside a step (a teacher lookup inside ``compute_loss``) goes to ``after``."""
    def wrapped(*args, **kwargs):
        mark(before)
        result = function(*args, **kwargs)
        mark(after)
        return result

    return wrapped
