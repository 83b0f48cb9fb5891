"""Preference data: readers, tokenization, batching and the built-in synthetic set. No Ray here."""

from goalrm.data.batch import collate_pairs
from goalrm.data.errors import BadRowError, BadRows
from goalrm.data.formats import PreferencePair, read_pairs, synthetic_preference_pairs
from goalrm.data.synthetic import synthetic_pairs
from goalrm.data.tokenize import TokenizedPair, TruncationStats, tokenize_pairs

__all__ = [
    "BadRowError", "BadRows", "PreferencePair", "TokenizedPair", "TruncationStats",
    "collate_pairs", "read_pairs", "synthetic_pairs", "synthetic_preference_pairs", "tokenize_pairs",
]
