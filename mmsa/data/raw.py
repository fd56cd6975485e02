"""Raw-data loaders for seed 002: TESS (audio) + MVSA-Multiple (text-image), 3 classes.

The paper (Li et al. 2026, section 2.1) trains on the union of two public corpora that share no
samples: TESS, 2,800 acted utterances (200 target words x 7 emotions x 2 speakers, OAF/YAF) in the
public release (the paper counts 4,240 and keeps 4,151), and MVSA-Multiple, 19,600 tweets with an
image, labelled by 3 annotators (the paper keeps 17,507).  Both are split 8:1:1.  This module reads
folders laid out like the public releases and returns plain Python records; ``mmsa.data.extract``
turns them into the feature pickle the models read.

Layouts read here
- TESS: any folder tree of ``.wav`` files named ``<speaker>_<word>_<emotion>.wav``, e.g.
  ``OAF_angry/OAF_back_angry.wav`` or ``YAF_pleasant_surprised/YAF_dog_ps.wav``.  The emotion is the
  last ``_`` field of the file name (``ps`` = pleasant surprise).
- MVSA-Multiple: ``<root>/data/<id>.txt`` and ``<root>/data/<id>.jpg``, and
  ``<root>/labelResultAll.txt`` with a header line and then per line
  ``<id> <text,image> <text,image> <text,image>`` (tab or space separated), one pair per annotator.

Class indices follow the synthetic 3-class data: 0 = negative, 1 = neutral, 2 = positive.

Choices where the paper is silent (written down here and in notebook 06):
- TESS 7 -> 3 classes as the paper says: positive = happy, pleasant surprise; neutral = neutral;
  negative = angry, disgust, fear, sad.
- MVSA, per annotator: the (text, image) pair becomes one polarity with the rule used since
  Xu & Mao (2017) for MVSA: equal labels -> that label; one neutral and one polar -> the polar one;
  positive with negative -> no vote (the annotator's view is inconsistent).
- MVSA, over the three annotators: the label with at least ``min_votes`` = 2 votes wins.  Anything
  else is a *tie* (1-1-1, 1-1 with one inconsistent annotator, or fewer than 2 usable votes):
  ``tie="drop"`` (default) removes the sample, ``tie="neutral"`` labels it neutral.
- Splits: each corpus is split 8:1:1 on its own, seeded and stratified by class (validation and
  test get round(0.1 n) samples each, train the rest, which reproduces the paper's Table 1 sizes
  exactly: 4,151 -> 3,321/415/415 and 17,507 -> 14,005/1,751/1,751).  Stratifying guarantees that
  every split holds audio clips of every class, which the pairing needs.
- Pairing (the paper does not say how an audio clip meets a text-image pair): inside each split,
  every text-image pair gets one audio clip of the *same class* from the same split, drawn with a
  seeded generator by walking through a shuffled list of that class's clips and reshuffling when it
  runs out, so clips are reused as evenly as possible.  Pairing inside a split keeps every test
  clip unseen in training.  The paired dataset has as many samples as MVSA pairs.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

CLASS_NAMES = ("negative", "neutral", "positive")
POLARITY = {"negative": 0, "neutral": 1, "positive": 2}

# ---------------------------------------------------------------------------------------------
# TESS
# ---------------------------------------------------------------------------------------------

TESS_EMOTIONS = ("angry", "disgust", "fear", "happy", "neutral", "ps", "sad")
TESS_TO_CLASS = {
    "angry": 0, "disgust": 0, "fear": 0, "sad": 0,  # negative
    "neutral": 1,  # neutral
    "happy": 2, "ps": 2,  # positive (ps = pleasant surprise)
}
_TESS_ALIASES = {"pleasant_surprise": "ps", "pleasant_surprised": "ps", "surprise": "ps", "surprised": "ps"}


def parse_tess_name(path: str | Path) -> dict:
    """``OAF_back_angry.wav`` -> {"speaker": "OAF", "word": "back", "emotion": "angry", "label": 0}."""
    stem = Path(path).stem
    parts = stem.split("_")
    if len(parts) < 3:
        raise ValueError(f"TESS file name {Path(path).name!r} is not <speaker>_<word>_<emotion>.wav")
    speaker, word = parts[0].upper(), parts[1].lower()
    emotion = "_".join(parts[2:]).lower()
    emotion = _TESS_ALIASES.get(emotion, emotion)
    if emotion not in TESS_TO_CLASS:
        raise ValueError(
            f"unknown TESS emotion {emotion!r} in {Path(path).name!r}; expected one of {', '.join(TESS_EMOTIONS)}"
        )
    return {"speaker": speaker, "word": word, "emotion": emotion, "label": TESS_TO_CLASS[emotion]}


def load_tess(root: str | Path) -> list[dict]:
    """All ``.wav`` files under ``root`` (recursively), sorted by path.

    Each record: ``id`` (file stem), ``path``, ``speaker``, ``word``, ``emotion``, ``label``.
    A file whose name does not parse is an error that names it.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"TESS folder not found: {root}. Get the Toronto emotional speech set (e.g. the Kaggle copy "
            "'ejlok1/toronto-emotional-speech-set-tess') and pass its unpacked folder."
        )
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav")
    if not files:
        raise FileNotFoundError(f"no .wav files under {root}")
    records = []
    for p in files:
        rec = parse_tess_name(p)
        rec.update(id=p.stem, path=str(p))
        records.append(rec)
    return records


# ---------------------------------------------------------------------------------------------
# MVSA-Multiple
# ---------------------------------------------------------------------------------------------


def pair_polarity(text_label: str, image_label: str) -> Optional[int]:
    """One annotator's (text, image) labels -> one class index, or None when positive meets negative."""
    t, i = POLARITY[text_label.strip().lower()], POLARITY[image_label.strip().lower()]
    if t == i:
        return t
    if t == 1:
        return i
    if i == 1:
        return t
    return None  # positive with negative: inconsistent


def majority_label(votes: Sequence[Optional[int]], tie: str = "drop", min_votes: int = 2) -> Optional[int]:
    """Majority over annotators' votes (None = no vote).

    The winner needs at least ``min_votes`` votes and strictly more than any other label; otherwise
    it is a tie: ``tie="drop"`` returns None, ``tie="neutral"`` returns 1 (neutral).
    """
    if tie not in ("drop", "neutral"):
        raise ValueError(f"tie must be 'drop' or 'neutral', got {tie!r}")
    counts = Counter(v for v in votes if v is not None).most_common()
    if counts and counts[0][1] >= min_votes and (len(counts) == 1 or counts[0][1] > counts[1][1]):
        return counts[0][0]
    return None if tie == "drop" else POLARITY["neutral"]


def parse_mvsa_labels(path: str | Path, tie: str = "drop") -> dict[str, dict]:
    """Read ``labelResultAll.txt``: id -> {"votes": [...], "label": int or None}."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MVSA label file not found: {path} (expected labelResultAll.txt in the MVSA-Multiple folder)")
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or not fields[0].isdigit():  # header ("ID text,image ...") or blank
            continue
        pairs = fields[1:]
        if not pairs:
            raise ValueError(f"{path}:{lineno}: no annotator labels for id {fields[0]}")
        votes = []
        for pair in pairs:
            bits = pair.split(",")
            if len(bits) != 2:
                raise ValueError(f"{path}:{lineno}: expected 'text,image' labels, got {pair!r}")
            try:
                votes.append(pair_polarity(*bits))
            except KeyError as err:
                raise ValueError(f"{path}:{lineno}: unknown label {err.args[0]!r} (use positive/neutral/negative)") from None
        out[fields[0]] = {"votes": votes, "label": majority_label(votes, tie)}
    return out


def load_mvsa_multiple(root: str | Path, tie: str = "drop", check_files: bool = True) -> list[dict]:
    """Text-image records ``id``, ``text``, ``image`` (path), ``label``, ``votes``, sorted by numeric id.

    Samples whose majority is a tie are dropped (``tie="drop"``) or neutral (``tie="neutral"``);
    samples whose text or image file is missing are skipped when ``check_files``.
    """
    root = Path(root)
    labels = parse_mvsa_labels(root / "labelResultAll.txt", tie)
    records = []
    for sid in sorted(labels, key=int):
        lab = labels[sid]
        if lab["label"] is None:
            continue
        txt, img = root / "data" / f"{sid}.txt", root / "data" / f"{sid}.jpg"
        if check_files and not (txt.exists() and img.exists()):
            continue
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.exists() else ""
        records.append({"id": sid, "text": clean_tweet(text), "image": str(img), "label": lab["label"], "votes": lab["votes"]})
    return records


def clean_tweet(text: str) -> str:
    """Remove URLs and collapse white space (user names and hashtags are kept as words)."""
    text = re.sub(r"https?://\S+", " ", text)
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------
# Splits and pairing
# ---------------------------------------------------------------------------------------------

SPLITS = ("train", "valid", "test")


def split_indices(n: int, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 42,
                  labels: Optional[Sequence[int]] = None) -> dict[str, np.ndarray]:
    """Seeded 8:1:1 split of ``range(n)``: valid/test get round(r n) each, train the rest.

    With ``labels`` the split is stratified while keeping those exact sizes: every class's samples
    are spread evenly (in seeded random order) over [0, 1), then the sorted order is cut.
    """
    if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must be three numbers summing to 1, got {ratios}")
    rng = np.random.default_rng(seed)
    if labels is None:
        perm = rng.permutation(n)
    else:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries for n={n}")
        key = np.empty(n)
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            key[idx[rng.permutation(len(idx))]] = (np.arange(len(idx)) + rng.random(len(idx))) / len(idx)
        perm = np.argsort(key, kind="stable")
    n_valid, n_test = int(round(ratios[1] * n)), int(round(ratios[2] * n))
    n_train = n - n_valid - n_test
    return {
        "train": np.sort(perm[:n_train]),
        "valid": np.sort(perm[n_train : n_train + n_valid]),
        "test": np.sort(perm[n_train + n_valid :]),
    }


def pair_by_class(text_image: list[dict], audio: list[dict], seed: int = 42) -> list[dict]:
    """Give every text-image record an audio clip of the same class (seeded, balanced reuse).

    Returns records ``id`` ("<mvsa id>|<audio id>"), ``text``, ``image``, ``audio`` (wav path),
    ``label``, ``mvsa_id``, ``audio_id``, ``audio_emotion``.
    """
    rng = np.random.default_rng(seed)
    pools = {c: [a for a in audio if a["label"] == c] for c in range(len(CLASS_NAMES))}
    queues: dict[int, list] = {c: [] for c in pools}
    out = []
    for rec in text_image:
        c = rec["label"]
        if not pools[c]:
            raise ValueError(f"no audio clip of class {CLASS_NAMES[c]!r} to pair with text-image sample {rec['id']}")
        if not queues[c]:
            queues[c] = [pools[c][k] for k in rng.permutation(len(pools[c]))]
        a = queues[c].pop()
        out.append({
            "id": f"{rec['id']}|{a['id']}", "text": rec["text"], "image": rec["image"], "audio": a["path"],
            "label": c, "mvsa_id": rec["id"], "audio_id": a["id"], "audio_emotion": a["emotion"],
        })
    return out


def build_tess_mvsa(tess_root: str | Path, mvsa_root: str | Path, seed: int = 42, tie: str = "drop",
                    ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, list[dict]]:
    """Load both corpora, split each 8:1:1 (seeded, stratified), pair by class inside each split."""
    audio = load_tess(tess_root)
    text_image = load_mvsa_multiple(mvsa_root, tie=tie)
    a_idx = split_indices(len(audio), ratios, seed, labels=[r["label"] for r in audio])
    ti_idx = split_indices(len(text_image), ratios, seed + 1, labels=[r["label"] for r in text_image])
    return {
        s: pair_by_class([text_image[k] for k in ti_idx[s]], [audio[k] for k in a_idx[s]], seed=seed + 2 + i)
        for i, s in enumerate(SPLITS)
    }
