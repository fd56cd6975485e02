"""Modality encoders (SPEC §3.1): a BERT for text, one LSTM each for audio and vision.

Every encoder returns a pair ``(local, global)``:

* local  (B, T, H): one vector per step (BERT token states / LSTM outputs),
* global (B, H):    one vector per sequence ([CLS] state / final LSTM state).

DAST-GAN and EMT-DLFR feed the local streams to the EMT layers and the globals to the global
multimodal context.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmsa.types import Batch

# BERT special token ids (bert-base-uncased / MiniLM vocab)
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 100, 101, 102


class TextEncoder(nn.Module):
    """BERT text encoder: local = last-layer token states (B,L,H), global = [CLS] state (B,H).

    model:        "minilm" / None (the packaged MiniLM-L6-H384), a local BERT directory, or
                  "tiny" (random-init 2-layer, hidden 32, for unit tests).
    freeze:       no gradients, BERT kept in eval mode, forward under ``torch.no_grad``.
    use_features: do not build a BERT at all; read pre-extracted token states from
                  ``batch.text`` (B,L,feature_dim) and take position 0 as [CLS].
    A batch that carries only ``batch.text`` (no ids) is always encoded from the features.
    The BERT lives in ``self.bert`` so the Trainer gives its parameters ``bert_lr``.
    """

    def __init__(self, model: Optional[str] = "minilm", freeze: bool = False,
                 use_features: bool = False, feature_dim: Optional[int] = None,
                 tiny_vocab: int = 30522):
        super().__init__()
        self.freeze = freeze
        self.use_features = use_features
        self.bert = None
        if not use_features:
            from transformers import BertConfig, BertModel

            if str(model).lower() == "tiny":
                cfg = BertConfig(vocab_size=tiny_vocab, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=512)
                self.bert = BertModel(cfg, add_pooling_layer=False)
            else:
                from mmsa.pretrained import resolve_text_model

                self.bert = BertModel.from_pretrained(str(resolve_text_model(model)), add_pooling_layer=False)
            if freeze:
                for p in self.bert.parameters():
                    p.requires_grad_(False)
                self.bert.eval()
        self.dim = self.bert.config.hidden_size if self.bert is not None else feature_dim
        if self.dim is None:
            raise ValueError("TextEncoder(use_features=True) needs feature_dim (the text feature size)")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze and self.bert is not None:
            self.bert.eval()  # a frozen BERT never uses dropout
        return self

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        use_feats = self.bert is None or (batch.text_ids is None and batch.text is not None)
        if use_feats:
            x = batch.text
            if x is None:
                raise ValueError("text encoder is in feature mode (use_text_features=True) but batch.text is None; "
                                 "expected pre-extracted features of shape (B, L, %d)" % self.dim)
            if x.dim() != 3 or x.shape[-1] != self.dim:
                raise ValueError(f"batch.text has shape {tuple(x.shape)}; expected (B, L, {self.dim}) "
                                 f"(set text_dim to the feature size)")
            return x, x[:, 0]
        if batch.text_ids is None:
            raise ValueError("batch has neither text_ids (B, L) nor text features (B, L, D)")
        ids = batch.text_ids.long()
        if ids.dim() != 2:
            raise ValueError(f"batch.text_ids has shape {tuple(ids.shape)}; expected (B, L)")
        mask = batch.text_mask if batch.text_mask is not None else (ids != PAD_ID)
        mask = mask.long()
        if self.freeze:
            with torch.no_grad():
                local = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        else:
            local = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        return local, local[:, 0]


class SequenceEncoder(nn.Module):
    """Audio/vision encoder: one unidirectional LSTM over the packed sequence.

    local  = per-step LSTM outputs padded back to T, through ``local_proj`` -> (B, T, out_dim)
    global = final hidden state (at each sequence's own last valid step), through
             ``global_proj`` -> (B, out_dim).
    Lengths are clamped to >= 1 (a zero-length sequence reads one zero frame).
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_dim = in_dim
        self.lstm = nn.LSTM(in_dim, hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.local_proj = nn.Linear(hidden, out_dim)
        self.global_proj = nn.Linear(hidden, out_dim)
        self.dim = out_dim

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"sequence input has shape {tuple(x.shape)}; expected (B, T, {self.in_dim})")
        B, T, _ = x.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long)
        lengths = lengths.detach().to("cpu", torch.long).clamp(1, T)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        return self.local_proj(self.dropout(out)), self.global_proj(self.dropout(h[-1]))
