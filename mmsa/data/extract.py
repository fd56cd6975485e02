"""Feature extraction for seed 002 (section 1.1 of the paper), from local weights only.

- text: a BERT-architecture encoder (the paper: RoBERTa-wwm-ext, which is a ``BertModel``), last
  hidden states of every token -> ``text`` (N, L, Dt) and the inputs ``text_bert`` (N, 3, L);
- audio: wav2vec 2.0 (``transformers.Wav2Vec2Model``), last hidden states -> ``audio`` (N, Ta, Da);
- image: ResNeSt-50 (timm ``resnest50d``), last feature map of a 224x224 image = a 7x7 grid of
  2048-d tokens -> ``vision`` (N, 49, Dv).  timm is an optional extra; ``TinyImageCNN`` is a
  random-init stand-in with the same output layout for tests and tutorials.

Nothing here downloads: every ``load_*`` takes a local directory or file and raises a clear error
otherwise.  ``write_features`` stores the result in the MMSA pickle format of the synthetic 3-class
data (``mmsa.data.mmsa_pickle``): per split ``raw_text``, ``id``, ``text``, ``text_bert``,
``audio``, ``vision``, ``audio_lengths``, ``vision_lengths``, ``classification_labels`` (0/1/2)
and ``regression_labels`` (= class - 1, i.e. -1/0/1, kept because the format requires the key).

WAV files are read with the standard-library ``wave`` module (16-bit or 8-bit or 32-bit PCM; mono
or the mean of the channels) and resampled to 16 kHz by linear interpolation (TESS is 24.4 kHz).
Images are read with PIL, converted to RGB, resized to 224x224 (no crop, the whole tweet image is
kept) and normalised with the ImageNet mean and standard deviation.
"""
from __future__ import annotations

import os
import pickle
import wave
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _local_dir(path, what: str, example: str) -> Path:
    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"no {what} checkpoint at {path} (expected {path / 'config.json'}). This machine is offline: "
            f"save one with `{example}.from_pretrained(name).save_pretrained(dir)` where you have internet "
            "and pass that directory."
        )
    return path


# ---------------------------------------------------------------------------------------------
# Text: BERT / RoBERTa-wwm-ext last hidden states
# ---------------------------------------------------------------------------------------------


def load_text_encoder(path) -> tuple:
    """(tokenizer, model) from a local directory; ``"minilm"`` or None = the packaged MiniLM."""
    from transformers import AutoModel, AutoTokenizer

    from mmsa.pretrained import resolve_text_model

    path = resolve_text_model(path)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    return tok, model


@torch.no_grad()
def text_features(texts: Sequence[str], tokenizer, model, max_length: int = 50, batch_size: int = 32) -> dict:
    """Last hidden states of every token, padded to ``max_length``.

    Returns ``text`` (N, L, H) float32, ``text_bert`` (N, 3, L) int64 (ids, mask, segment ids).
    """
    model.eval()
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    seg = enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(texts), batch_size):
        ids = enc["input_ids"][s : s + batch_size].to(device)
        mask = enc["attention_mask"][s : s + batch_size].to(device)
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        out.append((h * mask[..., None]).float().cpu())  # padded rows are zero, as in the MMSA files
    return {
        "text": torch.cat(out).numpy().astype(np.float32),
        "text_bert": torch.stack([enc["input_ids"], enc["attention_mask"], seg], 1).numpy().astype(np.int64),
    }


# ---------------------------------------------------------------------------------------------
# Audio: wav2vec 2.0 last hidden states
# ---------------------------------------------------------------------------------------------


def read_wav(path, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 waveform in [-1, 1] at ``sample_rate`` (stdlib ``wave`` + linear resampling)."""
    with wave.open(str(path), "rb") as f:
        n_ch, width, rate, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
        raw = f.readframes(n)
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV is not supported (use 8/16/32-bit PCM)")
    x = x.reshape(-1, n_ch).mean(1)
    if rate != sample_rate and len(x) > 1:
        m = max(1, int(round(len(x) * sample_rate / rate)))
        x = np.interp(np.linspace(0, len(x) - 1, m), np.arange(len(x)), x).astype(np.float32)
    return x


def load_audio_encoder(path):
    """``Wav2Vec2Model`` from a local directory (e.g. a saved facebook/wav2vec2-base)."""
    from transformers import Wav2Vec2Model

    path = _local_dir(path, "wav2vec 2.0", "transformers.Wav2Vec2Model")
    return Wav2Vec2Model.from_pretrained(path, local_files_only=True).eval()


@torch.no_grad()
def audio_features(waves: Sequence[np.ndarray], model, max_frames: Optional[int] = None) -> dict:
    """Last hidden states per clip (one clip at a time, so no padding enters the CNN).

    Each waveform is normalised to zero mean / unit variance (what Wav2Vec2FeatureExtractor does
    for the base models).  Returns ``audio`` (N, Ta, H) zero padded (cut at ``max_frames``) and
    ``audio_lengths`` (N,).
    """
    model.eval()
    device = next(model.parameters()).device
    feats = []
    for w in waves:
        w = np.asarray(w, np.float32)
        w = (w - w.mean()) / (w.std() + 1e-7)
        h = model(torch.from_numpy(w)[None].to(device)).last_hidden_state[0].float().cpu()
        feats.append(h[:max_frames] if max_frames else h)
    T = max(f.shape[0] for f in feats)
    out = np.zeros((len(feats), T, feats[0].shape[1]), np.float32)
    for k, f in enumerate(feats):
        out[k, : f.shape[0]] = f.numpy()
    return {"audio": out, "audio_lengths": np.array([f.shape[0] for f in feats], np.int64)}


# ---------------------------------------------------------------------------------------------
# Image: ResNeSt-50 last feature map as a 7x7 grid of tokens
# ---------------------------------------------------------------------------------------------


def load_image(path, size: int = 224) -> torch.Tensor:
    """(3, size, size) float tensor, RGB, ImageNet-normalised."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    return (x - mean) / std


def load_image_encoder(name: str = "resnest50d", weights=None) -> nn.Module:
    """A timm backbone without its classifier; ``weights`` = a local state-dict file
    (``.pth``/``.bin``/``.safetensors``).  Without ``weights`` the network is random-init."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            "the ResNeSt-50 image encoder needs timm, an optional extra: `pip install timm` "
            "(offline: install its wheel from a local file). For tests use mmsa.data.extract.TinyImageCNN()."
        ) from err
    model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    if weights is not None:
        weights = Path(weights)
        if not weights.exists():
            raise FileNotFoundError(f"image encoder weights not found: {weights}")
        if weights.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(weights))
        else:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # drop the classifier
        model.load_state_dict(state, strict=True)
    return model.eval()


class TinyImageCNN(nn.Module):
    """A random-init stand-in for ResNeSt-50: three stride-2 convolutions + a 7x7 grid pool."""

    def __init__(self, channels: int = 32, grid: int = 7):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels // 2, 5, stride=4, padding=2), nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(grid),
        )
        self.num_features = channels

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@torch.no_grad()
def image_features(images: Sequence, model: nn.Module, grid: int = 7, size: int = 224, batch_size: int = 16) -> np.ndarray:
    """(N, grid*grid, C) tokens, row-major over the last feature map (pooled to grid x grid if needed)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(images), batch_size):
        chunk = [load_image(p, size) if not isinstance(p, torch.Tensor) else p for p in images[s : s + batch_size]]
        x = torch.stack(chunk).to(device)
        fmap = model.forward_features(x) if hasattr(model, "forward_features") else model(x)
        if fmap.dim() != 4:
            raise ValueError(f"image encoder must return a (N, C, H, W) feature map, got {tuple(fmap.shape)}")
        if fmap.shape[-2:] != (grid, grid):
            fmap = nn.functional.adaptive_avg_pool2d(fmap, grid)
        out.append(fmap.flatten(2).transpose(1, 2).float().cpu())  # (n, grid*grid, C)
    return torch.cat(out).numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Records -> feature pickle
# ---------------------------------------------------------------------------------------------


def extract_split(records: Sequence[dict], text_encoder: tuple, audio_encoder, image_encoder,
                  max_text_len: int = 50, max_audio_frames: Optional[int] = None, grid: int = 7) -> dict:
    """Feature arrays for paired records (``mmsa.data.raw.build_tess_mvsa`` output)."""
    tok, tmodel = text_encoder
    out = text_features([r["text"] for r in records], tok, tmodel, max_length=max_text_len)
    out.update(audio_features([read_wav(r["audio"]) for r in records], audio_encoder, max_frames=max_audio_frames))
    out["vision"] = image_features([r["image"] for r in records], image_encoder, grid=grid)
    labels = np.array([r["label"] for r in records], np.int64)
    out.update(
        raw_text=np.array([r["text"] for r in records], dtype=object),
        id=np.array([r["id"] for r in records], dtype=object),
        vision_lengths=np.full(len(records), grid * grid, np.int64),
        classification_labels=labels,
        regression_labels=(labels - 1).astype(np.float32),
    )
    return out


def write_features(splits: dict, path, text_encoder: tuple, audio_encoder, image_encoder, **kw) -> dict:
    """Extract every split and pickle ``{"train", "valid", "test"}`` to ``path``; returns the dict.

    Audio of all splits is padded to one common length so the three splits share shapes.
    """
    data = {name: extract_split(recs, text_encoder, audio_encoder, image_encoder, **kw) for name, recs in splits.items()}
    T = max(d["audio"].shape[1] for d in data.values())
    for d in data.values():
        if d["audio"].shape[1] < T:
            pad = np.zeros((d["audio"].shape[0], T - d["audio"].shape[1], d["audio"].shape[2]), np.float32)
            d["audio"] = np.concatenate([d["audio"], pad], 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=4)
    return data
