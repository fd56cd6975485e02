"""SynthMSA's text features: the frozen BERT's token states of the generated sentences
(``mmsa.data.synthetic``), computed once and stored by content."""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=2)
def text_model_and_tokenizer(path: str):
    """The tokenizer and the frozen BERT at ``path`` (kept for the next call)."""
    from transformers import AutoTokenizer

    from mmsa.encoders import load_bert

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = load_bert(path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


def encode(model, ids: np.ndarray, mask: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Frozen last-layer token states (pads are 0).

    Sentences are encoded in batches of similar length, each cut to its longest sentence:
    with attention masking this gives the same states as padding to L, at a fraction of the cost.
    """
    import torch

    N, L = ids.shape
    out = np.zeros((N, L, model.config.hidden_size), np.float32)
    order = np.argsort(mask.sum(1), kind="stable")
    with torch.no_grad():
        for i in range(0, N, batch_size):
            idx = order[i:i + batch_size]
            m = mask[idx]
            n = int(m.sum(1).max())
            m_t = torch.from_numpy(np.ascontiguousarray(m[:, :n]))
            h = model(input_ids=torch.from_numpy(np.ascontiguousarray(ids[idx, :n])), attention_mask=m_t,
                      token_type_ids=torch.zeros_like(m_t)).last_hidden_state
            out[idx, :n] = h.float().numpy() * m[:, :n, None]
    return out


def cached_encode(model, ids, mask, text_model, cache_dir) -> np.ndarray:
    """``encode``, stored under ``cache_dir`` by a hash of the ids, the mask and the text model."""
    if cache_dir is None:
        return encode(model, ids, mask)
    key = hashlib.sha1(ids.tobytes() + mask.tobytes() + str(text_model).encode()).hexdigest()[:16]
    file = Path(cache_dir) / f"text_{key}.npy"
    if file.exists():
        return np.load(file)
    feats = encode(model, ids, mask)
    file.parent.mkdir(parents=True, exist_ok=True)
    np.save(file, feats)
    return feats
