"""A tiny English sentiment lexicon: the text side of SynthMSA.

SynthMSA's sentences are written from this lexicon, so the lexicon is also a perfect
"rule-based" reader of them.  Three ingredients, as in classic lexicon-based sentiment
analysis (e.g. SO-CAL, VADER):

* ``ADJECTIVES``: word -> prior intensity on the [-3, 3] scale of CMU-MOSI
  ("terrible" -3, "bad" -1.5, "okay" 0.3, "good" 1.5, "amazing" 2.8);
* ``INTENSIFIERS``: a multiplier for a following adjective ("very good" = 1.3 x 1.5);
* negation by *shifting*: "not X" = -NEGATION_SHIFT * X ("not good" ~ -0.75,
  "not bad" ~ +0.75) -- negated words are milder than their antonyms, as in real speech.

``phrase_score`` scores one phrase, ``lexicon_score`` a whole sentence (the mean of its
sentiment phrases), and ``PHRASES`` lists every phrase the generator may write.
"""
from __future__ import annotations

import re

ADJECTIVES: dict[str, float] = {
    # negative
    "terrible": -3.0, "horrible": -2.9, "awful": -2.8, "dreadful": -2.6, "painful": -2.3,
    "boring": -1.9, "disappointing": -1.8, "bad": -1.5, "dull": -1.3, "clumsy": -1.2,
    "weak": -1.1, "messy": -1.0, "bland": -0.9, "mediocre": -0.8, "slow": -0.5,
    # roughly neutral
    "ordinary": -0.2, "average": 0.0, "okay": 0.3, "fine": 0.5,
    # positive
    "decent": 0.8, "solid": 0.9, "pleasant": 1.0, "nice": 1.2, "funny": 1.4, "good": 1.5,
    "enjoyable": 1.6, "charming": 1.8, "great": 2.2, "beautiful": 2.3, "wonderful": 2.5,
    "excellent": 2.6, "brilliant": 2.7, "amazing": 2.8, "fantastic": 2.9, "perfect": 3.0,
}

INTENSIFIERS: dict[str, float] = {
    "extremely": 1.5, "very": 1.3, "really": 1.25, "so": 1.2, "quite": 1.1,
    "fairly": 0.8, "somewhat": 0.7,
}

NEGATION_SHIFT = 0.5
NEUTRAL_BAND = 0.6  # |intensity| below this: no intensifier/negation ("very okay" is odd)
NEGATABLE_MAX = 2.3  # "not amazing" is rare in speech; negate milder words only


def phrase_score(words: list[str]) -> float:
    """Score one phrase ``[not] [intensifier] adjective`` on [-3, 3]."""
    words = [w.lower() for w in words]
    value = ADJECTIVES[words[-1]]
    if len(words) >= 2 and words[-2] in INTENSIFIERS:
        value *= INTENSIFIERS[words[-2]]
    if words[0] == "not":
        value = -NEGATION_SHIFT * value
    return max(-3.0, min(3.0, value))


def _all_phrases() -> list[tuple[tuple[str, ...], float]]:
    phrases = []
    for adj, a in ADJECTIVES.items():
        mods: list[tuple[str, ...]] = [()]
        if NEUTRAL_BAND <= abs(a) < 2.8:  # no "very okay", no "extremely perfect"
            mods += [(m,) for m in INTENSIFIERS]
        for mod in mods:
            phrases.append(((*mod, adj), phrase_score([*mod, adj])))
            # natural negations only: "not good", "not very funny"; never "not extremely perfect"
            if NEUTRAL_BAND <= abs(a) <= NEGATABLE_MAX and mod in {(), ("very",), ("really",)}:
                phrases.append((("not", *mod, adj), phrase_score(["not", *mod, adj])))
    return phrases


#: every phrase the SynthMSA generator may write, with its score
PHRASES: list[tuple[tuple[str, ...], float]] = _all_phrases()


def lexicon_score(sentence: str) -> float:
    """Mean score of the sentiment phrases in ``sentence`` (0.0 when there are none).

    This is the rule-based reader of SynthMSA text: a baseline that sees only the words.
    """
    words = re.findall(r"[a-z']+", sentence.lower())
    scores = []
    for i, w in enumerate(words):
        if w not in ADJECTIVES:
            continue
        phrase = [w]
        if i >= 1 and words[i - 1] in INTENSIFIERS:
            phrase.insert(0, words[i - 1])
        j = i - len(phrase)
        if j >= 0 and words[j] == "not":
            phrase.insert(0, "not")
        scores.append(phrase_score(phrase))
    return float(sum(scores) / len(scores)) if scores else 0.0
