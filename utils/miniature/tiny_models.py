"""Tiny BERT and DistilBERT models with a small WordPiece vocabulary, built offline from configs (tests, demo)."""

import string
from pathlib import Path

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
