"""Tokenised features and the collator that pads a batch."""

import torch

SEQUENCE_KEYS = ("input_ids", "token_type_ids")


def tokenize_examples(tokenizer, examples, max_length, prefix=""):
    """Token ids of each example's text (or text pair), truncated to ``max_length``.

    Returns one dict per example with ``{prefix}input_ids`` and, when the tokenizer makes
    them, ``{prefix}token_type_ids`` (attention masks are made by the collator).
    """
    texts = [example["text_a"] for example in examples]
    pairs = [example["text_b"] for example in examples]
    has_pairs = any(pair is not None for pair in pairs)
    encoded = tokenizer(texts, pairs if has_pairs else None, truncation=True, max_length=max_length,
                        return_attention_mask=False)
    keys = [key for key in SEQUENCE_KEYS if key in encoded]
    return [{prefix + key: encoded[key][i] for key in keys} for i in range(len(examples))]


def merge_features(*feature_lists):
    """Join per-example dicts made for different models (student, teacher) and labels."""
    return [dict(item for part in parts for item in part.items()) for parts in zip(*feature_lists)]


class PadCollator:
    """Pad each batch to its longest sequence, rounded up to ``pad_to_multiple_of`` (capped at
    ``max_length``) when given, or to ``max_length`` when ``pad_to_max_length``.

    For every prefix (``""`` for the student, ``"teacher_"`` for a teacher with its own
    tokenizer) it pads ``input_ids`` with that tokenizer's pad id and ``token_type_ids`` with 0
    and adds ``attention_mask``. ``labels`` become a long tensor, or float for regression; any
    other integer entry (SQuAD's ``start_positions``/``end_positions``) a long tensor.
    """

    def __init__(self, pad_token_ids, max_length=None, pad_to_max_length=False, regression=False,
                 pad_to_multiple_of=None):
        self.pad_token_ids = pad_token_ids
        self.max_length = max_length
        self.pad_to_max_length = pad_to_max_length
        self.regression = regression
        self.pad_to_multiple_of = pad_to_multiple_of

    def width(self, lengths):
        """The padded length of a batch whose sequences have ``lengths``."""
        if self.pad_to_max_length:
            return self.max_length
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
            width = max(min(width, self.max_length), max(lengths)) if self.max_length else width
        return width

    def __call__(self, features):
        batch = {}
        for prefix, pad_id in self.pad_token_ids.items():
            lengths = [len(feature[prefix + "input_ids"]) for feature in features]
            width = self.width(lengths)
            for key, fill in (("input_ids", pad_id), ("token_type_ids", 0)):
                if prefix + key in features[0]:
                    batch[prefix + key] = _pad([feature[prefix + key] for feature in features], width, fill)
            batch[prefix + "attention_mask"] = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
        for key, value in features[0].items():
            if key == "labels":
                dtype = torch.float32 if self.regression else torch.long
            elif isinstance(value, int) and not isinstance(value, bool):
                dtype = torch.long
            else:
                continue
            batch[key] = torch.tensor([feature[key] for feature in features], dtype=dtype)
        return batch


def _pad(sequences, width, fill):
    padded = torch.full((len(sequences), width), fill, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, :len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded


def model_inputs(batch, accepted, prefix=""):
    """The entries of ``batch`` (with ``prefix`` stripped) that a model's forward accepts."""
    inputs = {}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        if prefix + key in batch and key in accepted:
            inputs[key] = batch[prefix + key]
    return inputs
