"""Loading models and tokenizers, and the checks that a teacher and a student fit together."""

import functools
import inspect
import logging
from pathlib import Path
from urllib.parse import urlparse

from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

from utils.engine.errors import UserError
from utils.engine.features import model_inputs

logger = logging.getLogger(__name__)


def _looks_like_path(name_or_path):
    return name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "sentencepiece.bpe.model")


def probe_hub(endpoint):
    """None when ``endpoint`` answers an HTTP request within 3 s (any status), else why not. The
    request goes through the hub client's session, so proxies (``HTTPS_PROXY``) are honoured."""
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint, timeout=3)
    except Exception as error:  # the HTTP client's connect, timeout and proxy errors
        return " ".join(str(error).split()) or type(error).__name__
    return None


def hub_reachable():
    """Whether the Hugging Face hub answers (``probe_hub``, once per process); False under the
    user's ``HF_HUB_OFFLINE=1``. When it does not answer, ``_load`` loads hub names from the local
    cache only (``local_files_only``), which says so at once instead of retrying for a minute, and
    this is logged once. Nothing of the hub client's configuration is changed."""
    import huggingface_hub.constants as hub

    if hub.HF_HUB_OFFLINE:
        return False
    if getattr(hub_reachable, "answer", None) is None:
        problem = probe_hub(hub.ENDPOINT)
        hub_reachable.answer = problem is None
        if problem is not None:
            logger.warning("the Hugging Face hub (%s) cannot be reached (%s): hub names load from the local cache "
                           "only", urlparse(hub.ENDPOINT).hostname, problem)
    return hub_reachable.answer


def hub_dataset(path, *names, split, cache_dir=None):
    """``datasets.load_dataset`` of a hub dataset; from the local cache only
    (``DownloadConfig(local_files_only=True)``) when the hub does not answer (``hub_reachable``)."""
    import datasets

    offline = {} if hub_reachable() else {"download_config": datasets.DownloadConfig(local_files_only=True)}
    return datasets.load_dataset(path, *names, split=split, cache_dir=cache_dir, **offline)


def _refuse_empty(folder, what):
    if folder.is_dir() and not any(folder.iterdir()):
        raise UserError(f"the {what.split()[0]} folder {folder} is empty: not a saved model")


def _load(loader, name_or_path, what, **kwargs):
    """Call ``loader.from_pretrained`` and turn a missing, empty, unreachable or corrupt model (a
    truncated ``model.safetensors``, say) into a UserError."""
    from safetensors import SafetensorError

    local = Path(name_or_path).expanduser()
    if not local.exists() and _looks_like_path(name_or_path):
        raise UserError(f"{what} path {name_or_path} does not exist")
    _refuse_empty(local, what)
    if local.is_dir() and not (local / "config.json").is_file() and loader is not AutoTokenizer:
        raise UserError(f"the {what.split()[0]} folder {name_or_path} has no config.json: it is not a saved model "
                        "(save_pretrained writes one)")
    if not local.exists() and not hub_reachable():
        kwargs = dict(kwargs, local_files_only=True)
    try:
        return loader.from_pretrained(str(local) if local.exists() else name_or_path, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:
        reason = " ".join(str(error).split()) if str(error).strip() else type(error).__name__
        if isinstance(error, SafetensorError):
            reason = f"its weights file is damaged or not a safetensors file ({reason})"
        raise UserError(f"could not load the {what} {name_or_path!r}: {reason}") from error


def _load_model(loader, name_or_path, what, **kwargs):
    """``_load`` for a model, with PyTorch's scaled-dot-product attention (SDPA).

    ``attn_implementation="sdpa"`` makes the attention layers call
    ``torch.nn.functional.scaled_dot_product_attention``, which on a GPU dispatches to fused
    kernels (FlashAttention, memory-efficient attention) instead of materialising the
    (batch, heads, tokens, tokens) score matrix; BERT and DistilBERT support it. An architecture
    that does not is loaded with its default attention instead.
    """
    try:
        return _load(loader, name_or_path, what, attn_implementation="sdpa", **kwargs)
    except UserError as sdpa_error:
        if "scaled_dot_product_attention" not in str(sdpa_error.__cause__):
            raise
        logger.info("the %s %s does not support SDPA attention; using its default attention", what, name_or_path)
        return _load(loader, name_or_path, what, **kwargs)


def load_tokenizer(name_or_path, *, what="model", cache_dir=None, do_lower_case=None):
    """The tokenizer of ``name_or_path``; a folder or hub model without a usable one is refused
    (transformers would build a tokenizer of the special tokens alone, and every word would be
    [UNK])."""
    kwargs = {"cache_dir": cache_dir}
    if do_lower_case:
        kwargs["do_lower_case"] = True
    local = Path(name_or_path).expanduser()
    _refuse_empty(local, what)
    if local.is_dir() and not any((local / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"the {what} folder {name_or_path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): "
                        "save the tokenizer of the model it came from there, or name one with --tokenizer_name "
                        "where the script has it")
    tokenizer = _load(AutoTokenizer, name_or_path, f"{what} tokenizer", **kwargs)
    if len(tokenizer.get_vocab()) <= len(set(tokenizer.all_special_tokens)):
        raise UserError(f"the {what} tokenizer of {name_or_path} knows only its special tokens "
                        f"({len(tokenizer.get_vocab())}): every word would become [UNK]")
    return tokenizer


def load_config(name_or_path, *, what="model", cache_dir=None):
    return _load(AutoConfig, name_or_path, f"{what} config", cache_dir=cache_dir)


def is_sequence_classifier(config):
    """Whether a checkpoint was saved as a sequence classifier (it then has a trained head)."""
    return any(name.endswith("ForSequenceClassification") for name in (config.architectures or []))


def load_classifier(name_or_path, task, *, what="model", cache_dir=None, keep_head=False, num_layers=None):
    """A sequence classifier for ``task`` (a ``GlueTask``-like object with ``label_names``,
    ``num_labels`` and ``is_regression``).

    A plain pre-trained model gets a new head with the task's labels (a head of another size
    in the checkpoint is replaced). With ``keep_head`` (a fine-tuned teacher) the checkpoint's
    head is kept and must have the task's label count. ``num_layers`` keeps the checkpoint's
    first layers only.
    """
    config = load_config(name_or_path, what=what, cache_dir=cache_dir)
    if num_layers is not None:
        layers_key = "n_layers" if hasattr(config, "n_layers") else "num_hidden_layers"
        if not 1 <= num_layers <= getattr(config, layers_key):
            raise UserError(f"--num_layers {num_layers}: the {what} {name_or_path} has "
                            f"{getattr(config, layers_key)} layers")
        setattr(config, layers_key, num_layers)
    if keep_head:
        if config.num_labels != task.num_labels:
            raise UserError(f"the {what} {name_or_path} has {config.num_labels} output label(s) but task "
                            f"{task.name} has {task.num_labels}: pass a {what} fine-tuned on {task.name}")
    else:
        config.num_labels = task.num_labels
        if task.label_names:
            config.id2label = dict(enumerate(task.label_names))
            config.label2id = {name: index for index, name in enumerate(task.label_names)}
        config.problem_type = "regression" if task.is_regression else "single_label_classification"
    return _load_model(AutoModelForSequenceClassification, name_or_path, what, config=config, cache_dir=cache_dir,
                       ignore_mismatched_sizes=not keep_head)


def load_question_answerer(name_or_path, *, what="model", cache_dir=None, keep_head=False):
    """A span-prediction model (start and end logits per token), as for SQuAD.

    A checkpoint without a question-answering head gets a new one. With ``keep_head`` (a
    fine-tuned teacher) the checkpoint must have been saved as a question-answering model.
    """
    config = load_config(name_or_path, what=what, cache_dir=cache_dir)
    if keep_head and not any(name.endswith("ForQuestionAnswering") for name in config.architectures or []):
        saved_as = ", ".join(config.architectures or []) or "no architecture"
        raise UserError(f"the {what} {name_or_path} is not a question-answering model (saved as {saved_as}): "
                        f"pass a {what} fine-tuned on SQuAD (run_squad.py)")
    if not keep_head:
        config.num_labels = 2  # the head's two outputs: start and end logits
    return _load_model(AutoModelForQuestionAnswering, name_or_path, what, config=config, cache_dir=cache_dir)


def label_permutation(config, task):
    """Indices that put a fine-tuned model's logits into the task's label order, or None.

    Only when the model's config names exactly the task's labels in another order.
    """
    names = [config.id2label[i] for i in range(config.num_labels)] if config.id2label else []
    if not task.label_names or sorted(names) != sorted(task.label_names) or names == list(task.label_names):
        return None
    return [names.index(label) for label in task.label_names]


def fine_tuning_loss(model):
    """``compute_loss(wrapped_model, batch) -> (loss, {})`` of fine-tuning a sequence classifier
    (``model``; ``wrapped_model`` is the loop's wrapped or compiled copy): its task loss on the
    batch's labels (cross-entropy, or mean squared error for regression)."""
    accepted = forward_arguments(model)

    def compute_loss(wrapped_model, batch):
        return wrapped_model(**model_inputs(batch, accepted), labels=batch["labels"]).loss, {}

    return compute_loss


def forward_arguments(model):
    """Names the model's ``forward`` accepts (DistilBERT takes no ``token_type_ids``), read once
    per model class: the training steps ask for them on every micro-batch."""
    return _forward_arguments(type(model))


@functools.lru_cache(maxsize=None)
def _forward_arguments(model_class):
    return frozenset(inspect.signature(model_class.forward).parameters) - {"self"}


def num_layers(model):
    """The number of transformer layers (BERT's ``num_hidden_layers``, DistilBERT's ``n_layers``)."""
    config = model.config
    return getattr(config, "num_hidden_layers", None) or getattr(config, "n_layers")


def hidden_width(model):
    config = model.config
    return getattr(config, "hidden_size", None) or getattr(config, "dim")


def same_vocabulary(first_tokenizer, second_tokenizer):
    """Whether both tokenizers turn any text into the same ids (same vocabulary and casing)."""
    if first_tokenizer.get_vocab() != second_tokenizer.get_vocab():
        return False
    probe = "The Quick brown FOX, naïve café; 1234 tokens!"
    return first_tokenizer(probe)["input_ids"] == second_tokenizer(probe)["input_ids"]


def max_input_length(tokenizer, *models):
    """The most tokens every one of ``models`` can read: their position-embedding tables and the
    tokenizer's ``model_max_length`` (when the tokenizer sets one)."""
    limits = [model.config.max_position_embeddings for model in models]
    if tokenizer.model_max_length < 1_000_000:  # unset: transformers' VERY_LARGE_INTEGER
        limits.append(tokenizer.model_max_length)
    return min(limits)
