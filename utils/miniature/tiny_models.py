"""Tiny BERT and DistilBERT models with a small WordPiece vocabulary, built offline from configs (tests, demo),
and in-memory classifiers without dropout with random batches for them (the LGTM gradient's tests)."""

import string
from pathlib import Path

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "a", "an", "is", "was", "movie", "film", "good", "bad", "great", "not", "and",
    "it", "of", "to", "in", "man", "woman", "dog", "cat", "sat", "on", "mat", "he", "she",
]


def tiny_vocab(cased=False, extra_words=()):
    """A WordPiece vocabulary that spells any ASCII text, character by character if need be, with
    ``WORDS`` and ``extra_words`` as whole tokens."""
    letters = string.ascii_letters if cased else string.ascii_lowercase
    chars = list(letters + string.digits + string.punctuation)
    words = WORDS + list(extra_words)
    words += [w.capitalize() for w in words] if cased else []
    tokens = SPECIAL_TOKENS + chars + ["##" + c for c in letters + string.digits] + words
    return list(dict.fromkeys(tokens))  # single letters such as "a" are words too: each token once


def save_tokenizer(directory, cased=False, extra_words=()):
    vocab = {token: index for index, token in enumerate(tiny_vocab(cased, extra_words))}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=not cased)
    tokenizer.save_pretrained(directory)
    return tokenizer


def make_tiny_bert(directory, num_labels=2, hidden_size=32, num_layers=2, cased=False, seed=0,
                   hidden_dropout=0.1, attention_dropout=0.1, problem_type=None, classifier=True, extra_words=()):
    """Save a randomly initialised BERT classifier (or, with ``classifier=False``, a bare
    pre-trained-style encoder without a head) and its tokenizer in ``directory``."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = save_tokenizer(directory, cased, extra_words)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=2, intermediate_size=2 * hidden_size, max_position_embeddings=512,
        num_labels=num_labels, hidden_dropout_prob=hidden_dropout,
        attention_probs_dropout_prob=attention_dropout, problem_type=problem_type,
    )
    torch.manual_seed(seed)
    (BertForSequenceClassification if classifier else BertModel)(config).save_pretrained(directory)
    return directory


def make_tiny_distilbert(directory, num_labels=2, hidden_size=32, num_layers=2, cased=False, seed=0,
                         dropout=0.1, extra_words=()):
    """Save a randomly initialised DistilBERT classifier and its tokenizer in ``directory``."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = save_tokenizer(directory, cased, extra_words)
    config = DistilBertConfig(
        vocab_size=len(tokenizer), dim=hidden_size, n_layers=num_layers, n_heads=2,
        hidden_dim=2 * hidden_size, max_position_embeddings=512, num_labels=num_labels,
        dropout=dropout, attention_dropout=dropout, seq_classif_dropout=dropout,
    )
    torch.manual_seed(seed)
    DistilBertForSequenceClassification(config).save_pretrained(directory)
    return directory


# --------------------------------------------------------------------------- in-memory classifiers

IN_MEMORY_VOCAB, IN_MEMORY_LABELS = 60, 3


def tiny_bert(num_layers=2, seed=0, dtype=torch.float32):
    """A BERT classifier without dropout."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=IN_MEMORY_VOCAB, hidden_size=16, num_hidden_layers=num_layers, num_attention_heads=2,
        intermediate_size=32, num_labels=IN_MEMORY_LABELS, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, attn_implementation="eager",
    )
    return BertForSequenceClassification(config).to(dtype)


def tiny_distilbert(seed=1):
    """A DistilBERT classifier without dropout."""
    torch.manual_seed(seed)
    config = DistilBertConfig(
        vocab_size=IN_MEMORY_VOCAB, dim=16, n_layers=2, n_heads=2, hidden_dim=32, num_labels=IN_MEMORY_LABELS,
        dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0,
    )
    return DistilBertForSequenceClassification(config)


def random_batch(seed, batch_size=4, length=10):
    """Random ids with padding at the end of each sequence, two segments, random labels."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(length // 2, length + 1, (batch_size, 1), generator=generator)
    attention_mask = (torch.arange(length) < lengths).long()
    return {
        "input_ids": attention_mask * torch.randint(1, IN_MEMORY_VOCAB, (batch_size, length),
                                                    generator=generator),
        "attention_mask": attention_mask,
        "token_type_ids": (torch.arange(length) >= length // 2).long() * attention_mask,
        "labels": torch.randint(0, IN_MEMORY_LABELS, (batch_size,), generator=generator),
    }
