"""SynthMSA: a seeded multimodal sentiment dataset whose ground truth is known (docs/design.md §4.2).

Real MSA benchmarks cannot tell us *why* a model works: nobody knows how much each modality
really says about a clip, or when in the clip it says it.  SynthMSA writes the exact MMSA
pickle format (so every loader path is exercised) and stores that hidden truth beside the
features.  The story of one sample:

1. **Latent sentiment** ``s`` in [-3, 3] with a MOSI-like histogram (most mass around
   +-1..2, fewer extremes, a neutral bump), rounded to steps of 0.2; the label is ``s``
   (``kind="sims"``: ``s/3`` on [-1, 1], also in steps of 0.2).
2. **Reliability** ``r = (r_text, r_audio, r_vision)`` depends on polarity: negative clips
   are told mostly in words (0.9, 0.35, 0.3); strongly positive ones (s > 1.5) mostly by
   voice and face (0.35, 0.9, 0.85); the rest are balanced (0.6, 0.6, 0.6); plus jitter.
3. **Conflict**: about 10% of the polar clips have one modality (chosen at random) that
   expresses the *opposite* sign (sarcasm, a forced smile).  Each modality's expressed
   sentiment ``e_m`` is ``s`` or ``-s``; the unimodal labels ``regression_labels_T/A/V``
   record what each modality actually expresses, as CH-SIMS does.
4. **Text**: an English sentence written from ``mmsa.data.lexicon`` (intensities,
   intensifiers, negation, filler openers/subjects/sentences) whose sentiment phrase is a
   noisy function of ``e_text``.  Text reliability works by *replacement*: with probability
   ``1 - r_text`` the phrase is written for an unrelated random sentiment instead.  The
   sentence is tokenised with the MiniLM tokenizer into ``text_bert`` and encoded by the
   frozen MiniLM into ``text`` (last-layer token states, 384-d; padding rows are 0).
   The token span of the sentiment words is the text cue window.
5. **Audio / vision**: AR(1) noise (phi = 0.7, unit variance) plus a per-clip offset, zero padded after a
   per-clip valid length; inside one short window ``[t0, t0 + w)`` (w = 10-25% of the
   valid length: expressions are bursts) a cue is added: a fixed random "valence"
   direction scaled by ``r_m * e_m / 3`` plus a weaker "arousal" direction scaled by
   ``r_m * |e_m| / 3``.
6. ``kind="3class"`` (seed 002): same story with more neutral clips; class 0 if s < -0.5,
   1 if |s| <= 0.5, 2 otherwise (``classification_labels``; ``regression_labels`` keeps s).
   Vision is a 7x7 grid of image-patch features (49 tokens); its cue lives in a random
   2-3 x 2-3 block of patches and the cue window is [first, last + 1) of the block's
   patches in the flattened (row-major) grid.

Ground-truth keys: ``truth_reliability`` (N,3), ``truth_cue_window`` (N,3,2) [start, end)
in each modality's own steps (text: token positions incl. [CLS]), ``truth_conflict`` (N,).
Everything comes from ``numpy.random.SeedSequence(seed)``: the same seed gives
byte-identical arrays (the MiniLM forward is deterministic on a given machine).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

from mmsa.data.lexicon import ADJECTIVES, PHRASES, lexicon_score
from mmsa.data.mmsa_pickle import load_features
from mmsa.data.synth_text import cached_encode, text_model_and_tokenizer

GENERATOR_VERSION = 2  # bump whenever the story changes: invalidates cached files
KINDS = {
    # kind: (dataset name, default lengths (L, Ta, Tv), default dims (Da, Dv), neutral share)
    "mosi": ("synth_mosi", (50, 375, 500), (5, 20), 0.15),
    "sims": ("synth_sims", (39, 400, 55), (33, 709), 0.15),
    "3class": ("synth3", (50, 100, 49), (32, 64), 0.30),
}
RELIABILITY = {"negative": (0.9, 0.35, 0.3), "neutral": (0.6, 0.6, 0.6), "strong_positive": (0.35, 0.9, 0.85)}
CONFLICT_RATE = 0.10
AR_PHI = 0.7
CUE_SCALE = 6.0  # cue amplitude along the valence direction at r_m * |e_m| = 3 (noise std 1)

# --------------------------------------------------------------------------- sentences
OPENERS = ["I think", "Honestly,", "To be honest,", "Overall,", "In my opinion,", "Well,",
           "I felt that", "I have to say", "So", "For me,"]
SUBJECTS = [("the movie", "sg"), ("the film", "sg"), ("the plot", "sg"), ("the acting", "sg"),
            ("the story", "sg"), ("the ending", "sg"), ("the soundtrack", "sg"),
            ("this movie", "sg"), ("the dialogue", "sg"), ("the characters", "pl"),
            ("the jokes", "pl"), ("the effects", "pl")]
VERBS = {"sg": ["was", "is", "seemed", "felt"], "pl": ["were", "are", "seemed", "felt"]}
FILLERS = ["I watched it last weekend.", "It runs about two hours.", "I saw it with a friend.",
           "We went to the late show.", "The theater was almost full.", "It came out last year.",
           "My sister picked it.", "I had heard a lot about it."]
_PHRASE_SCORES = np.array([p[1] for p in PHRASES])
_PHRASE_NEGATED = np.array([p[0][0] == "not" for p in PHRASES])


def _pick_phrase(rng: np.random.Generator, target: float, noise: float = 0.4) -> str:
    """A lexicon phrase whose score is near ``target`` (Gaussian weights: a noisy choice)."""
    w = np.exp(-0.5 * ((_PHRASE_SCORES - target) / noise) ** 2) * np.where(_PHRASE_NEGATED, 0.4, 1.0)
    w = w + 1e-12
    return " ".join(PHRASES[rng.choice(len(PHRASES), p=w / w.sum())][0])


def write_sentence(rng: np.random.Generator, target: float, short: bool = False) -> tuple[str, tuple[int, int]]:
    """One review sentence expressing ``target``; returns (sentence, char span of sentiment words).

    e.g. "Honestly, the plot was not very good. I saw it with a friend."
    """
    subject, number = SUBJECTS[rng.integers(len(SUBJECTS))]
    verb = VERBS[number][rng.integers(4)]
    sentiment = _pick_phrase(rng, target)
    if not short and rng.random() < 0.25:  # "very good and really funny"
        sentiment += " and " + _pick_phrase(rng, target)
    head = ""
    if not short and rng.random() < 0.7:
        head = OPENERS[rng.integers(len(OPENERS))] + " "
    head += f"{subject} {verb} "
    start = len(head)
    sentence = head + sentiment + "."
    if not short and rng.random() < 0.4:
        sentence += " " + FILLERS[rng.integers(len(FILLERS))]
    return sentence[0].upper() + sentence[1:], (start, start + len(sentiment))


NOISE_WORDS = ["table", "seven", "window", "paper", "green", "station", "later", "number", "river",
               "chair", "morning", "yellow", "kitchen", "during", "street", "twelve", "bottle", "office"]


def garble(rng: np.random.Generator, sentence: str, span: tuple[int, int], p: float) -> tuple[str, tuple[int, int]]:
    """Replace each word with probability ``p`` by an unrelated common word (a noisy transcript).

    Returns the new sentence and the char span of the words that stood where the sentiment
    words stood.  The noise is visible: a reader (or a model) can tell a garbled sentence.
    """
    words, out, pos, start, end = sentence.split(" "), [], 0, None, None
    for w in words:
        w_start, w_end = pos, pos + len(w)
        new = NOISE_WORDS[rng.integers(len(NOISE_WORDS))] if rng.random() < p else w
        if w_end > span[0] and w_start < span[1]:
            c = sum(len(x) + 1 for x in out)
            start = c if start is None else start
            end = c + len(new.rstrip("."))
        out.append(new)
        pos = w_end + 1
    sentence = " ".join(out)
    if not sentence.endswith("."):
        sentence += "."
    if start is None:
        start, end = 0, len(sentence)
    return sentence[0].upper() + sentence[1:], (start, max(end, start + 1))


# --------------------------------------------------------------------------- latent & labels
def _grid(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Round to steps of 0.2 inside [lo, hi] (and turn -0.0 into 0.0)."""
    return (np.clip(np.round(np.asarray(x) * 5.0) / 5.0, lo, hi) + 0.0).astype(np.float32)


def sample_latent(rng: np.random.Generator, n: int, neutral: float = 0.15) -> np.ndarray:
    """MOSI-like sentiment: a neutral bump plus polar mass around |s| ~ 1.5, clipped to [-3, 3]."""
    is_neutral = rng.random(n) < neutral
    sign = np.where(rng.random(n) < 0.55, 1.0, -1.0)
    magnitude = np.abs(rng.normal(1.5, 0.8, n))
    return np.clip(np.where(is_neutral, rng.normal(0.0, 0.35, n), sign * magnitude), -3.0, 3.0)


def reliability_for(s: np.ndarray) -> np.ndarray:
    """Base reliability (N,3) by polarity of the sentiment (before jitter)."""
    r = np.tile(np.array(RELIABILITY["neutral"]), (len(s), 1))
    r[s < -0.5] = RELIABILITY["negative"]
    r[s > 1.5] = RELIABILITY["strong_positive"]
    return r


# --------------------------------------------------------------------------- audio / vision
def _frames(rng: np.random.Generator, e: np.ndarray, r: np.ndarray, T: int, D: int,
            noise: np.ndarray | None = None):
    """AR(1) frames with a sentiment burst.  Returns (x (N,T,D), lengths (N,), window (N,2)).

    ``noise`` (N,): std of extra white noise on every valid frame (the positive control's
    visible unreliability); None adds nothing and draws nothing.
    """
    N = len(e)
    valence, arousal = _directions(rng, D)
    lengths = rng.integers(int(np.ceil(0.5 * T)), T + 1, N)
    eps = rng.standard_normal((N, T, D))
    x = lfilter([np.sqrt(1 - AR_PHI ** 2)], [1.0, -AR_PHI], eps, axis=1)
    x += rng.normal(0.0, 0.2, (N, 1, D))  # per-clip offset (speaker / face identity)
    w = np.maximum(2, np.round(rng.uniform(0.10, 0.25, N) * lengths)).astype(np.int64)
    t0 = (rng.random(N) * (lengths - w + 1)).astype(np.int64)
    cue = CUE_SCALE * ((r * e / 3.0)[:, None] * valence + 0.5 * (r * np.abs(e) / 3.0)[:, None] * arousal)
    t = np.arange(T)[None, :]
    inside = (t >= t0[:, None]) & (t < (t0 + w)[:, None])
    x += inside[..., None] * cue[:, None, :]
    if noise is not None:
        x += noise[:, None, None] * rng.standard_normal((N, T, D))
    x *= (t < lengths[:, None])[..., None]
    return x.astype(np.float32), lengths, np.stack([t0, t0 + w], 1)


def _texture_frames(rng: np.random.Generator, content: np.ndarray, r: np.ndarray, T: int, D: int):
    """The DAM regime's frames: reliability is the stream's *texture*, not its loudness.

    x = sqrt(r) · AR(1) + sqrt(1 − r) · white noise: every frame has unit variance whatever r is,
    but a reliable stream is smooth (lag-1 autocorrelation 0.7 r) and an unreliable one rough.
    A burst carries ``content`` (what the modality says) at an amplitude that does not depend on r.
    Returns (x, lengths, window) as ``_frames``.
    """
    N = len(content)
    valence, arousal = _directions(rng, D)
    lengths = rng.integers(int(np.ceil(0.5 * T)), T + 1, N)
    smooth = lfilter([np.sqrt(1 - AR_PHI ** 2)], [1.0, -AR_PHI], rng.standard_normal((N, T, D)), axis=1)
    x = np.sqrt(r)[:, None, None] * smooth + np.sqrt(1 - r)[:, None, None] * rng.standard_normal((N, T, D))
    x += rng.normal(0.0, 0.2, (N, 1, D))
    w = np.maximum(2, np.round(rng.uniform(0.10, 0.25, N) * lengths)).astype(np.int64)
    t0 = (rng.random(N) * (lengths - w + 1)).astype(np.int64)
    cue = CUE_SCALE * ((content / 3.0)[:, None] * valence + 0.5 * (np.abs(content) / 3.0)[:, None] * arousal)
    t = np.arange(T)[None, :]
    x += ((t >= t0[:, None]) & (t < (t0 + w)[:, None]))[..., None] * cue[:, None, :]
    x *= (t < lengths[:, None])[..., None]
    return x.astype(np.float32), lengths, np.stack([t0, t0 + w], 1)


def _sync_frames(rng: np.random.Generator, e: np.ndarray, decoys: np.ndarray, duration: np.ndarray,
                 start: np.ndarray, T: int, D: int):
    """The STA regime's frames: one true burst at relative time [start, start + SYNC_WIDTH) of the
    clip, shared by audio and vision, and ``decoys.shape[1]`` bursts of the same shape at random
    times of this stream alone, each telling an unrelated sentiment.  ``duration`` (N,) is the
    clip's share of T (the same for both streams: one clip, two frame rates).
    Returns (x, lengths, window of the true burst)."""
    N = len(e)
    valence, arousal = _directions(rng, D)
    lengths = np.maximum(8, np.round(duration * T)).astype(np.int64)
    x = lfilter([np.sqrt(1 - AR_PHI ** 2)], [1.0, -AR_PHI], rng.standard_normal((N, T, D)), axis=1)
    x += rng.normal(0.0, 0.2, (N, 1, D))
    w = np.maximum(2, np.round(SYNC_WIDTH * lengths)).astype(np.int64)
    t = np.arange(T)[None, :]

    def burst(t0, value):
        cue = CUE_SCALE * ((value / 3.0)[:, None] * valence + 0.5 * (np.abs(value) / 3.0)[:, None] * arousal)
        return ((t >= t0[:, None]) & (t < (t0 + w)[:, None]))[..., None] * cue[:, None, :]

    t_true = np.minimum(np.round(start * lengths), lengths - w).astype(np.int64)
    x += burst(t_true, e)
    for k in range(decoys.shape[1]):
        # anywhere in the clip except on the true burst (rejection over a few draws, then the far end)
        t_k = (rng.random(N) * (lengths - w + 1)).astype(np.int64)
        for _ in range(20):
            clash = np.abs(t_k - t_true) < w
            if not clash.any():
                break
            t_k[clash] = (rng.random(clash.sum()) * (lengths[clash] - w[clash] + 1)).astype(np.int64)
        clash = np.abs(t_k - t_true) < w
        t_k[clash] = np.where(t_true[clash] > lengths[clash] / 2, 0, lengths[clash] - w[clash])
        x += burst(t_k, decoys[:, k])
    x *= (t < lengths[:, None])[..., None]
    return x.astype(np.float32), lengths, np.stack([t_true, t_true + w], 1)


def _patches(rng: np.random.Generator, e: np.ndarray, r: np.ndarray, D: int, grid: int = 7):
    """A grid x grid map of patch features; the cue sits on a random 2-3 x 2-3 block."""
    N = len(e)
    valence, arousal = _directions(rng, D)
    x = rng.standard_normal((N, grid * grid, D)) + rng.normal(0.0, 0.2, (N, 1, D))
    bh, bw = rng.integers(2, 4, N), rng.integers(2, 4, N)
    r0 = (rng.random(N) * (grid - bh + 1)).astype(np.int64)
    c0 = (rng.random(N) * (grid - bw + 1)).astype(np.int64)
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    inside = ((rows[None] >= r0[:, None]) & (rows[None] < (r0 + bh)[:, None])
              & (cols[None] >= c0[:, None]) & (cols[None] < (c0 + bw)[:, None]))
    cue = CUE_SCALE * ((r * e / 3.0)[:, None] * valence + 0.5 * (r * np.abs(e) / 3.0)[:, None] * arousal)
    x += inside[..., None] * cue[:, None, :]
    window = np.stack([r0 * grid + c0, (r0 + bh - 1) * grid + c0 + bw], 1)
    return x.astype(np.float32), np.full(N, grid * grid, np.int64), window


def _directions(rng: np.random.Generator, D: int) -> tuple[np.ndarray, np.ndarray]:
    """Two orthonormal directions: where valence and arousal live in this modality."""
    q, _ = np.linalg.qr(rng.standard_normal((D, 2)))
    if D == 1:
        return q[:, 0], np.zeros(D)
    return q[:, 0], q[:, 1]


# --------------------------------------------------------------------------- the generator
def _resolve(kind: str, lengths, dims):
    if kind not in KINDS:
        raise ValueError(f"unknown SynthMSA kind {kind!r}; choose one of {list(KINDS)}")
    dataset, default_lengths, default_dims, neutral = KINDS[kind]
    lengths = tuple(int(v) for v in (lengths or default_lengths))
    if len(lengths) != 3:
        raise ValueError(f"lengths must be (L_text, T_audio, T_vision), got {lengths}")
    if kind == "3class" and lengths[2] != 49:
        raise ValueError(f"the 3class variant has a 7x7 vision grid: T_vision must be 49, got {lengths[2]}")
    if lengths[0] < 16 or min(lengths[1:]) < 8:
        raise ValueError(f"lengths {lengths} too short: need L_text >= 16 and T_audio, T_vision >= 8")
    dims = tuple(dims) if dims is not None else (None, *default_dims)
    if len(dims) == 2:
        dims = (None, *dims)
    if len(dims) != 3 or min(int(d) for d in dims[1:]) < 1:
        raise ValueError(f"dims must be (text_dim or None, audio_dim, vision_dim), got {dims}")
    return dataset, lengths, (dims[0], int(dims[1]), int(dims[2])), neutral


RELIABILITY_MODES = ("polarity", "independent", "texture", "synchrony")
NOISE_SCALE = 3.0  # positive control: white-noise std at reliability 0 (AR(1) noise has std 1)
SYNC_DISTRACTORS = 2   # "synchrony": bursts per audio/vision stream that carry an unrelated sentiment
SYNC_WIDTH = 0.08      # "synchrony": burst width as a share of the clip's duration
SYNC_TEXT_RELIABILITY = 0.3  # "synchrony": the sentence tells the sentiment this often


def make_synthetic(path, kind: str = "mosi", sizes=(300, 100, 100), seed: int = 0, lengths=None,
                   dims=None, text_model="minilm", cache_dir=None, reliability: str = "polarity") -> Path:
    """Write a SynthMSA pickle in the public MMSA format (plus ``truth_*`` keys) to ``path``.

    kind:       "mosi" ([-3,3] labels), "sims" ([-1,1] labels, SIMS-like dims) or "3class"
    sizes:      (train, valid, test) sample counts
    lengths:    (L_text, T_audio, T_vision); defaults per kind (mosi 50/375/500, sims
                39/400/55, 3class 50/100/49)
    dims:       (text_dim or None, audio_dim, vision_dim); text_dim is the encoder's width
                (MiniLM: 384); defaults mosi (5, 20), sims (33, 709), 3class (32, 64)
    text_model: "minilm" or a local BERT directory (see ``mmsa.pretrained``)
    cache_dir:  optional folder caching encoded text features by content hash
    reliability: "polarity" (the story above: reliability follows the sentiment's polarity, some
                clips conflict) or "independent" (the **positive control**: each r_m is drawn
                uniformly in [0.05, 1] independently of the sentiment and of the other
                modalities, no conflicts, and unreliability is *visible*: audio/vision frames get
                white noise of std NOISE_SCALE * (1 - r_m) on top of a cue scaled by r_m, and each
                word of the sentence is replaced by an unrelated word with probability 1 - r_text.
                A model that weights modalities by how clean they look must win here.)
                Two regimes designed for DAST-GAN's modules (docs/design.md §4.2):
                "texture" (DAM): r_m uniform in [0.05, 1], independent of the sentiment; what
                modality m says is r_m·s + (1 − r_m)·z_m with z_m an unrelated sentiment, so
                trusting each modality in proportion to r_m pays; r_m is visible as the stream's
                texture at constant loudness (``_texture_frames``) and as garbled words.
                "synchrony" (STA): audio and vision carry one true burst at the same moment of
                the clip and SYNC_DISTRACTORS bursts each at their own random moments that tell
                unrelated sentiments (``_sync_frames``); only the co-occurrence across the two
                streams marks the true one.  The sentence tells s with reliability 0.3.
    """
    from mmsa.pretrained import resolve_text_model

    if reliability not in RELIABILITY_MODES:
        raise ValueError(f"unknown reliability mode {reliability!r}; valid: {RELIABILITY_MODES}")
    if reliability != "polarity" and kind == "3class":
        raise ValueError(f"reliability={reliability!r} exists for kind 'mosi' and 'sims' only")
    independent = reliability in ("independent", "texture")
    texture, synchrony = reliability == "texture", reliability == "synchrony"

    dataset, (L, Ta, Tv), (Dt, Da, Dv), neutral = _resolve(kind, lengths, dims)
    sizes = tuple(int(n) for n in sizes)
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"sizes must be three positive counts (train, valid, test), got {sizes}")
    N = sum(sizes)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    rng_latent, rng_text, rng_audio, rng_vision, rng_rel, rng_conf = streams

    # 1-3: latent sentiment, reliability by polarity, conflicts
    s = _grid(sample_latent(rng_latent, N, neutral), -3, 3).astype(np.float64)
    if independent:
        r = rng_rel.uniform(0.05, 1.0, (N, 3))
    elif synchrony:
        r = np.tile(np.array([SYNC_TEXT_RELIABILITY, 1.0, 1.0]), (N, 1))
    else:
        r = np.clip(reliability_for(s) + rng_rel.normal(0.0, 0.05, (N, 3)), 0.05, 1.0)
    polar = np.abs(s) >= 0.6
    p = 0.0 if independent or synchrony else min(1.0, CONFLICT_RATE / max(polar.mean(), 1e-6))
    conflict = polar & (rng_conf.random(N) < p)
    conflict_mod = rng_conf.integers(0, 3, N)
    e = np.repeat(s[:, None], 3, 1)
    e[conflict, conflict_mod[conflict]] *= -1
    if texture:  # what each modality says: the truth in proportion r_m, an unrelated sentiment otherwise
        unrelated = np.stack([sample_latent(rng_conf, N, neutral) for _ in range(3)], 1)
        e = r * s[:, None] + (1.0 - r) * unrelated

    # 4: text (replacement realises r_text; a text conflict is always written as such)
    replaced = (rng_text.random(N) > r[:, 0]) & ~(conflict & (conflict_mod == 0))
    if independent:  # the positive control garbles words instead (visible), see garble()
        replaced[:] = False
    random_sentiment = sample_latent(rng_text, N, neutral)
    e_text = np.where(replaced, random_sentiment, e[:, 0])
    tokenizer, model = text_model_and_tokenizer(str(resolve_text_model(text_model)))
    if Dt is not None and int(Dt) != model.config.hidden_size:
        raise ValueError(f"text_dim {Dt} does not match the text encoder's width {model.config.hidden_size}")
    def compose(i: int, short: bool = False):
        sentence, span = write_sentence(rng_text, e_text[i], short=short)
        return garble(rng_text, sentence, span, 1.0 - r[i, 0]) if independent else (sentence, span)

    sentences, spans = zip(*(compose(i) for i in range(N)))
    sentences, spans = list(sentences), list(spans)
    too_long = [i for i, ids in enumerate(tokenizer(sentences)["input_ids"]) if len(ids) > L]
    for i in too_long:  # retry without opener/filler so the sentiment words are never cut off
        sentences[i], spans[i] = compose(i, short=True)
    enc = tokenizer(sentences, padding="max_length", truncation=True, max_length=L,
                    return_offsets_mapping=True, return_tensors="np")
    ids, mask = enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
    text_bert = np.stack([ids, mask, np.zeros_like(ids)], 1)
    text_window = np.zeros((N, 2), np.int64)
    for i, (c0, c1) in enumerate(spans):
        off = enc["offset_mapping"][i]
        hit = np.flatnonzero((mask[i] == 1) & (off[:, 1] > off[:, 0]) & (off[:, 0] < c1) & (off[:, 1] > c0))
        text_window[i] = (hit[0], hit[-1] + 1) if len(hit) else (1, max(2, int(mask[i].sum()) - 1))
    text = cached_encode(model, ids, mask, text_model, cache_dir)
    label_text = np.array([lexicon_score(t) for t in sentences])

    # 5-6: audio frames; vision frames or the 7x7 patch grid
    noise = (lambda m: NOISE_SCALE * (1.0 - r[:, m])) if reliability == "independent" else (lambda m: None)
    if texture:
        audio, audio_len, audio_window = _texture_frames(rng_audio, e[:, 1], r[:, 1], Ta, Da)
        vision, vision_len, vision_window = _texture_frames(rng_vision, e[:, 2], r[:, 2], Tv, Dv)
    elif synchrony:  # one clip: the same duration and the same moment of the true burst in both streams
        duration, start = rng_conf.uniform(0.5, 1.0, N), rng_conf.uniform(0.0, 1.0 - SYNC_WIDTH, N)
        decoys = [np.stack([sample_latent(g, N, neutral) for _ in range(SYNC_DISTRACTORS)], 1)
                  for g in (rng_audio, rng_vision)]
        audio, audio_len, audio_window = _sync_frames(rng_audio, e[:, 1], decoys[0], duration, start, Ta, Da)
        vision, vision_len, vision_window = _sync_frames(rng_vision, e[:, 2], decoys[1], duration, start, Tv, Dv)
    else:
        audio, audio_len, audio_window = _frames(rng_audio, e[:, 1], r[:, 1], Ta, Da, noise(1))
        if kind == "3class":
            vision, vision_len, vision_window = _patches(rng_vision, e[:, 2], r[:, 2], Dv)
        else:
            vision, vision_len, vision_window = _frames(rng_vision, e[:, 2], r[:, 2], Tv, Dv, noise(2))

    lo, hi, scale = (-1.0, 1.0, 1 / 3) if kind == "sims" else (-3.0, 3.0, 1.0)
    data = {
        "raw_text": np.array(sentences), "id": np.array([f"synth{seed}_{i:05d}$_$0" for i in range(N)]),
        "text": text, "text_bert": text_bert, "audio": audio, "vision": vision,
        "audio_lengths": audio_len.astype(np.int64), "vision_lengths": vision_len.astype(np.int64),
        "regression_labels": _grid(s * scale, lo, hi),
        "regression_labels_T": _grid(label_text * scale, lo, hi),
        "regression_labels_A": _grid(e[:, 1] * scale, lo, hi),
        "regression_labels_V": _grid(e[:, 2] * scale, lo, hi),
        "truth_reliability": r.astype(np.float32),
        "truth_cue_window": np.stack([text_window, audio_window, vision_window], 1).astype(np.int64),
        "truth_conflict": conflict,
    }
    if kind == "3class":
        data["classification_labels"] = np.where(s < -0.5, 0, np.where(s <= 0.5, 1, 2)).astype(np.int64)
    bounds = np.cumsum((0,) + sizes)
    out = {name: {k: v[bounds[j]:bounds[j + 1]] for k, v in data.items()}
           for j, name in enumerate(("train", "valid", "test"))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(out, f, protocol=4)
    os.replace(tmp, path)  # atomic: parallel notebooks never read a half-written file
    return path


def synthetic_path(kind="mosi", sizes=(300, 100, 100), seed=0, root="data/synth", lengths=None,
                   dims=None, text_model="minilm", reliability: str = "polarity") -> Path:
    """The cache file name: it encodes everything the content depends on."""
    _, (L, Ta, Tv), (_, Da, Dv), _ = _resolve(kind, lengths, dims)
    tm = "minilm" if str(text_model).lower().startswith("minilm") else Path(str(text_model)).name
    n = "-".join(str(int(v)) for v in sizes)
    mode = "" if reliability == "polarity" else f"_{reliability}"
    return Path(root) / f"synth_{kind}{mode}_n{n}_s{seed}_L{L}-{Ta}-{Tv}_d{Da}-{Dv}_{tm}_v{GENERATOR_VERSION}.pkl"


def synthetic_splits(kind: str = "mosi", sizes=(300, 100, 100), seed: int = 0, root="data/synth",
                     zscore: bool = False, verbose: bool = True, **kw) -> dict:
    """Make (once, cached under ``root``) and load a SynthMSA file: {"train"|"valid"|"test": MSASplit}.

    ``kw`` goes to ``make_synthetic`` (lengths, dims, text_model, cache_dir).
    """
    path = synthetic_path(kind, sizes, seed, root, kw.get("lengths"), kw.get("dims"),
                          kw.get("text_model", "minilm"), kw.get("reliability", "polarity"))
    if not path.exists():
        make_synthetic(path, kind=kind, sizes=sizes, seed=seed, **kw)
    return load_features(path, KINDS[kind][0], zscore=zscore, verbose=verbose)


__all__ = ["make_synthetic", "synthetic_splits", "synthetic_path", "write_sentence", "sample_latent",
           "reliability_for", "ADJECTIVES", "KINDS"]
