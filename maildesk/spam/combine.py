"""Robinson's per-token probabilities and Fisher's chi-square combining. Pure numpy.

This is the scoring of SpamBayes (``chi2_spamprob``) and bogofilter, chosen
because its score means the same on mail from another year and source: a
token's probability is shrunk towards 0.5 by a Robinson prior in proportion to
how little it was seen, tokens near 0.5 are not clues at all, and the score
combines two one-sided chi-square tests ("is this mail's evidence unlike
ham?", "unlike spam?"), so conflicting or thin evidence lands in the middle
instead of at 0 or 1. Naive Bayes' sum of log-ratios, by contrast, puts nearly
every mail at 0 or 1, and how far it goes depends on the mail's length.

One addition: ``PRIOR_CLUES`` pseudo-clues of probability ``PRIOR_PROBABILITY``
join every mail's clues (a Robinson prior on the mail, as the one on each
token). A mail with many clues does not notice them; a mail with one or two
weak clues (a customer writing in a language the model never saw, so that
only a sender domain or the content type is known) stays in the ham band
instead of being held on the say-so of one header.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy.special import chdtrc

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

UNKNOWN_STRENGTH = 0.45  # Robinson's s: how many mails' worth of belief in 0.5 (SpamBayes)
UNKNOWN_PROBABILITY = 0.5  # Robinson's x: a token never seen is no evidence either way
MIN_STRENGTH = 0.1  # |p - 0.5| below this is not a clue (SpamBayes' minimum_prob_strength)
MAX_CLUES = 150  # the strongest clues of one mail (SpamBayes' max_discriminators)
PRIOR_CLUES = 2
PRIOR_PROBABILITY = 0.2


def token_probabilities(
    ham_mails: FloatArray, spam_mails: FloatArray, ham_total: FloatArray, spam_total: FloatArray
) -> FloatArray:
    """Robinson's f(w) per token from the number of ham/spam mails that held it.

    ``ham_total``/``spam_total`` are the mails each count is out of (per token,
    so a word can be judged among the mails of its own script).
    """
    ham_ratio = np.minimum(ham_mails / np.maximum(ham_total, 1.0), 1.0)
    spam_ratio = np.minimum(spam_mails / np.maximum(spam_total, 1.0), 1.0)
    both = ham_ratio + spam_ratio
    raw = np.divide(spam_ratio, both, out=np.full_like(both, UNKNOWN_PROBABILITY), where=both > 0)
    seen = ham_mails + spam_mails
    prior: npt.NDArray[np.float64] = (UNKNOWN_STRENGTH * UNKNOWN_PROBABILITY + seen * raw) / (
        UNKNOWN_STRENGTH + seen
    )
    return prior


def select_clues(probabilities: FloatArray) -> IntArray:
    """Indices of the clues: strong enough, at most ``MAX_CLUES``, strongest first."""
    strength = np.abs(probabilities - 0.5)
    clues = np.flatnonzero(strength >= MIN_STRENGTH)
    order = np.argsort(-strength[clues], kind="stable")[:MAX_CLUES]
    return clues[order]


def combine(clues: FloatArray) -> float:
    """Fisher-Robinson chi-square combining: 0 = ham, 1 = spam, 0.5 = no idea or both."""
    p = np.concatenate([np.clip(clues, 1e-12, 1 - 1e-12), np.full(PRIOR_CLUES, PRIOR_PROBABILITY)])
    if p.size == 0:
        return 0.5
    dof = 2 * p.size
    spamminess = 1.0 - float(chdtrc(dof, -2.0 * np.log1p(-p).sum()))
    hamminess = 1.0 - float(chdtrc(dof, -2.0 * np.log(p).sum()))
    return (spamminess - hamminess + 1.0) / 2.0
