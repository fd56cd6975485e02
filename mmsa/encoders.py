"""Modality encoders (docs/design.md §3.1): a BERT for text, one LSTM each for audio and vision.

Every encoder returns a pair ``(local, global)``:

* local  (B, T, H): one vector per step (BERT token states / LSTM outputs),
* global (B, H):    one vector per sequence ([CLS] state / final LSTM state).

DAST-GAN and EMT-DLFR feed the local streams to the EMT layers and the globals to the global
multimodal context.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from mmsa.types import Batch


def call_rnn(rnn: nn.RNNBase, inp, weights: Optional[dict] = None):
    """``rnn(inp)`` -- or, with ``weights``, the RNN run with those tensors as its parameters
    (``torch.func.functional_call``) -- under the package's one precision rule for recurrent layers.

    Every RNN call in ``mmsa`` goes through here.  Under CPU autocast the RNN runs in fp32 on an
    fp32 input: oneDNN's reduced-precision LSTM kernels exist only on CPUs with AVX-512 BF16 /
    AMX (on an AVX2 CPU: "could not create a primitive descriptor for the LSTM forward
    propagation primitive"), and the recurrence is the part of a model least tolerant of bf16
    rounding anyway.  ``inp`` is a (B, T, D) tensor or a ``PackedSequence``; everything else
    (CUDA autocast, no autocast) calls the RNN as it is.
    """
    call = (lambda x: rnn(x)) if weights is None else (lambda x: torch.func.functional_call(rnn, weights, (x,)))
    data = inp.data if isinstance(inp, nn.utils.rnn.PackedSequence) else inp
    if data.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return call(inp.float())
    return call(inp)


# BERT special token ids (bert-base-uncased / MiniLM vocab)
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 100, 101, 102


def load_bert(path: str):
    """``BertModel.from_pretrained(path)`` without a pooler and without transformers' load report."""
    from transformers import BertModel
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # the checkpoint's unused pooler weights are not news
    hf_logging.disable_progress_bar()
    try:
        return BertModel.from_pretrained(path, add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def keep_mask_dropout(module: nn.Module) -> nn.Module:
    """Swap every ``nn.Dropout`` inside ``module`` (a fine-tuned BERT) for ``mmsa.attention.Dropout``:
    the same distribution, a cheaper random mask on a CPU (one 64-bit draw per four entries
    instead of ``bernoulli_``'s two 32-bit draws per entry: a training step of MISA / Self-MM with
    the toolkit's BERT size 1-4 % faster, measured on a 2-core CPU).  No parameters change, so
    checkpoints load as before.  The dropout on BERT's attention maps is not a module (its SDPA
    call takes the probability) and stays as it is."""
    from mmsa.attention import Dropout

    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p))
    return module


def bert_states(bert: nn.Module, ids: Tensor, mask: Tensor) -> Tensor:
    """Last-layer token states (B, L, H) of ``bert`` on ``ids`` / ``mask`` (B, L), zero at padding.

    On a CPU a batch of 16 or more sentences runs in groups of about 8 of similar length
    (``mmsa.attention.LengthGroups``), each cut to its longest sentence: a padding token is masked
    out of every attention and nothing reads its state, so the valid tokens come out as in one
    padded call (to float rounding) while the per-token layers, most of BERT's time, skip most of
    the padding.  Measured on a 2-core CPU, forward + backward of 32 sentences with lengths
    uniform on [L/4, L]: 16-21 % faster at L = 32 and 50 for the toolkit's 2-layer BERT-base
    shape and MiniLM-L6.  Padding comes out as zeros either way (as from ``FrozenBert``), so no
    model can see whether the batch was grouped.
    """
    from mmsa.attention import LengthGroups

    valid = mask.bool()
    groups = LengthGroups.of(valid, size=8, min_length=16)
    if groups is None:
        local = bert(input_ids=ids, attention_mask=mask).last_hidden_state
    else:
        L = ids.shape[1]
        parts = [bert(input_ids=i[:, :c], attention_mask=m[:, :c]).last_hidden_state
                 for i, m, c in zip(groups.split(ids), groups.split(mask), groups.cuts)]
        local = groups.merge([nn.functional.pad(x, (0, 0, 0, L - x.shape[1])) for x in parts])
    return local.masked_fill(~valid[..., None], 0.0)


class FrozenBert:
    """One frozen, pretrained BERT per (checkpoint, device), shared by every model in the process.

    A frozen text encoder has nothing to learn, so it should not be copied into every model,
    every checkpoint and every optimiser.  ``FrozenBert.get(path)`` returns the shared instance;
    calling it maps token ids (B, L) to last-layer token states (B, L, H), zero on padding.

    **Cache.**  The states of a sentence depend only on its ids, so they are computed once and
    kept in an LRU cache keyed by the ids of the valid positions.  A sentence whose dropped words
    are ``[UNK]`` has other ids than the complete sentence, so it is encoded anew: the dropped
    words' information is really gone, from every token state and from ``[CLS]``.  The cache
    holds at most ``max_bytes`` of states (default 1 GiB); the least recently used go first.
    Training with fresh word masks every epoch would fill it with sentences never seen again:
    ``mmsa.missing.make_train_transform(text_bank=K)`` draws each clip's words from K fixed
    masks instead, so every incomplete sentence is encoded once.

    **Disk store.**  The in-memory cache dies with its process, and the book trains in many
    processes (``mmsa.experiment.fit_all``'s workers, one kernel per notebook), each of which would
    encode the same sentences again (about 16 s of a 1-thread training at the book's size).
    ``sync(folder)`` shares the states between processes: it writes the states this process
    computed since its last ``sync`` to a new file in ``folder/<checkpoint hash>-t<threads>/`` and
    reads the files other processes wrote there.  A sentence's states are encoded without
    padding, together only with the sentences of its length, so they do not depend on the other
    sentences of the call beyond floating-point rounding: the number of rows in a matrix product
    may change its kernel's blocking, and so the last bits (up to about 3e-6 on an AVX-512 Xeon,
    none on some CPUs; tests/test_encoders.py checks 1e-5).  The cache and the store therefore
    hold *a* correct encoding of each sentence, equal to any other to within that rounding; the
    first one computed or read wins, so within a process a sentence always gets the same bits.
    What changes the bits systematically is part of the store's folder name: the checkpoint (its
    hash), the thread count and the CPU's vector instruction set
    (``torch.backends.cpu.get_cpu_capability()``), so a store on a shared disk is never read by a
    process that would round differently.  A file that cannot be read is skipped with a warning
    (it is a cache: deleting the folder only costs time).
    """

    _shared: dict = {}

    def __init__(self, path: str, max_bytes: int = 1 << 30):
        self.model = load_bert(path).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.path, self.dim, self.max_bytes, self.bytes = path, self.model.config.hidden_size, max_bytes, 0
        self._copies: dict = {}                   # device -> model on that device
        self.cache: "OrderedDict[tuple, Tensor]" = OrderedDict()
        self.hits = self.misses = 0
        self._unsaved: list = []                  # keys computed here since the last sync()
        self._seen: set = set()                   # store files already read (or written) here
        self._tag: Optional[str] = None

    @classmethod
    def loaded(cls) -> list:
        """The frozen BERTs this process has loaded (one per path)."""
        return list(cls._shared.values())

    @classmethod
    def get(cls, name_or_path: Optional[str] = "minilm") -> "FrozenBert":
        from mmsa.pretrained import resolve_text_model

        path = str(resolve_text_model(name_or_path))
        if path not in cls._shared:
            cls._shared[path] = cls(path)
        return cls._shared[path]

    def _model_on(self, device: torch.device):
        key = str(device)
        if key not in self._copies:
            self._copies[key] = self.model if device.type == "cpu" else self.model.to(device)
        return self._copies[key]

    @torch.no_grad()
    def __call__(self, ids: Tensor, mask: Tensor, store=True) -> Tensor:
        """ids, mask (B, L) -> token states (B, L, H) float32, zero where mask == 0.

        store: keep newly computed rows in the cache (a bool, or one bool per row)."""
        B, L = ids.shape
        n = mask.long().sum(1).tolist()
        ids_cpu = ids.detach().to("cpu", torch.int32)
        keys = [(self.path, ids_cpu[b, : n[b]].numpy().tobytes()) for b in range(B)]
        out = torch.zeros(B, L, self.dim, device=ids.device)
        todo = []
        for b, k in enumerate(keys):
            hit = self.cache.get(k)
            if hit is None:
                todo.append(b)
            else:
                self.cache.move_to_end(k)
                out[b, : n[b]] = hit.to(ids.device)
        self.hits += B - len(todo)
        store = [bool(store)] * B if isinstance(store, bool) else [bool(x) for x in store]
        self.misses += len(todo)
        by_length: dict = {}                 # encode rows of one length together, without padding:
        for b in todo:                        # a row's states then never depend on which other rows
            by_length.setdefault(max(n[b], 1), []).append(b)   # missed the cache with it
        for width, rows in by_length.items():
            sel = torch.tensor(rows, device=ids.device)
            m = mask[sel, :width].long()
            h = self._model_on(ids.device)(input_ids=ids[sel, :width].long(), attention_mask=m,
                                           token_type_ids=torch.zeros_like(m)).last_hidden_state.float()
            for j, b in enumerate(rows):
                states = h[j, : n[b]]
                out[b, : n[b]] = states
                if store[b]:
                    self._put(keys[b], states.clone())
                    self._unsaved.append(keys[b])
        return out

    def _put(self, key: tuple, states: Tensor) -> None:
        if key in self.cache:
            return
        self.cache[key] = states
        self.bytes += states.numel() * states.element_size()
        while self.bytes > self.max_bytes and self.cache:
            _, old = self.cache.popitem(last=False)
            self.bytes -= old.numel() * old.element_size()

    def tag(self) -> str:
        """Short hash of the checkpoint's files: the store of one checkpoint is never read for another."""
        if self._tag is None:
            h = hashlib.sha1()
            for f in sorted(Path(self.path).glob("*")):
                if f.is_file() and f.suffix in (".json", ".safetensors", ".bin", ".txt"):
                    h.update(f.name.encode())
                    h.update(f.read_bytes())
            self._tag = h.hexdigest()[:12]
        return self._tag

    def store_dir(self, folder) -> Path:
        """``folder/<checkpoint hash>-t<threads>-<cpu capability>``: one store per way of rounding."""
        cpu = torch.backends.cpu.get_cpu_capability().lower()
        return Path(folder) / f"{self.tag()}-t{torch.get_num_threads()}-{cpu}"

    def sync(self, folder) -> tuple[int, int]:
        """Write this process's new states to ``folder`` and read the other processes' files.

        Returns (states written, states read)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, save_file

        folder = self.store_dir(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = 0
        new = {k[1].hex(): self.cache[k].contiguous() for k in self._unsaved if k in self.cache}
        self._unsaved = []
        if new:
            name = f"{os.getpid()}-{len(self._seen)}-{os.urandom(4).hex()}.safetensors"
            tmp = folder / f".{name}.tmp"
            save_file(new, str(tmp))
            os.replace(tmp, folder / name)            # atomic: a reader sees a whole file or none
            self._seen.add(name)
            written = len(new)
        read = 0
        for f in sorted(folder.glob("*.safetensors")):
            if f.name in self._seen:
                continue
            self._seen.add(f.name)
            try:
                states = load_file(str(f))
            except (OSError, SafetensorError, ValueError) as err:
                warnings.warn(f"skipping unreadable text-state file {f}: {err}", stacklevel=2)
                continue
            for hex_ids, t in states.items():
                key = (self.path, bytes.fromhex(hex_ids))
                if key not in self.cache:
                    self._put(key, t)
                    read += 1
        return written, read


class TextEncoder(nn.Module):
    """BERT text encoder: local = last-layer token states (B,L,H), global = [CLS] state (B,H).

    model:        "minilm" / None (the packaged MiniLM-L6-H384), a local BERT directory, or
                  "tiny" (random-init 2-layer, hidden 32, for unit tests).
    freeze:       no gradients.  A frozen *pretrained* BERT is the process-wide ``FrozenBert``
                  (not a parameter of this module, not in its checkpoints, cached by sentence);
                  a frozen "tiny" BERT stays inside the module.
    use_features: do not run a BERT at all; read pre-extracted token states from
                  ``batch.text`` (B,L,feature_dim) and take position 0 as [CLS].  This is the
                  public feature files' way, but beware: those states were computed from the
                  *complete* sentence, so zeroing a dropped token's row does not remove its
                  information from the other rows or from [CLS].  Use a BERT (frozen or not)
                  whenever words are dropped (``mmsa.missing``).
    A batch that carries only ``batch.text`` (no ids) is always encoded from the features.
    A fine-tuned BERT lives in ``self.bert`` so the Trainer gives its parameters ``bert_lr``.
    """

    def __init__(self, model: Optional[str] = "minilm", freeze: bool = False,
                 use_features: bool = False, feature_dim: Optional[int] = None,
                 tiny_vocab: int = 30522):
        super().__init__()
        self.freeze = freeze
        self.use_features = use_features
        self.bert = None
        self.frozen = None
        if not use_features:
            from transformers import BertConfig, BertModel

            if str(model).lower() == "tiny":
                cfg = BertConfig(vocab_size=tiny_vocab, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=512)
                self.bert = BertModel(cfg, add_pooling_layer=False)
                if freeze:
                    for p in self.bert.parameters():
                        p.requires_grad_(False)
                    self.bert.eval()
            elif freeze:
                self.frozen = FrozenBert.get(model)
            else:
                from mmsa.pretrained import resolve_text_model

                self.bert = load_bert(str(resolve_text_model(model)))
        if self.bert is not None and not freeze:
            keep_mask_dropout(self.bert)
        if self.frozen is not None:
            self.dim = self.frozen.dim
        else:
            self.dim = self.bert.config.hidden_size if self.bert is not None else feature_dim
        if self.dim is None:
            raise ValueError("TextEncoder(use_features=True) needs feature_dim (the text feature size)")

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze and self.bert is not None:
            self.bert.eval()  # a frozen BERT never uses dropout
        return self

    def forward(self, batch: Batch) -> tuple[Tensor, Tensor]:
        use_feats = self.use_features or (batch.text_ids is None and batch.text is not None)
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
        if self.frozen is not None:
            local = self.frozen(ids, mask)
        elif self.freeze:
            with torch.no_grad():
                local = bert_states(self.bert, ids, mask)
        else:
            local = bert_states(self.bert, ids, mask)
        return local, local[:, 0]


class SequenceEncoder(nn.Module):
    """Audio/vision encoder: one unidirectional LSTM over each sequence's valid steps.

    local  = per-step LSTM outputs (zero on padding), through ``local_proj`` -> (B, T, out_dim)
    global = hidden state at each sequence's own last valid step, through ``global_proj``
             -> (B, out_dim).
    Lengths are clamped to >= 1 (a zero-length sequence reads one zero frame).

    The LSTM runs over the whole padded tensor rather than a packed sequence: it is causal, so
    its outputs at the valid steps t < length never see the padding that follows, and the
    padded call is one fused oneDNN/cuDNN kernel where the packed one is a loop of small ops
    (10x slower on a CPU at MOSI's 500 steps).  The padding's outputs are set to 0, as
    ``pad_packed_sequence`` would.
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
        out, _ = call_rnn(self.lstm, x)  # in fp32 under CPU autocast (see call_rnn)
        if lengths is None:
            return self.local_proj(self.dropout(out)), self.global_proj(self.dropout(out[:, -1]))
        lengths = lengths.to(x.device, torch.long).clamp(1, T)
        last = out.gather(1, (lengths - 1)[:, None, None].expand(B, 1, out.shape[-1])).squeeze(1)
        out = out * (torch.arange(T, device=x.device)[None] < lengths[:, None]).to(out.dtype)[..., None]
        return self.local_proj(self.dropout(out)), self.global_proj(self.dropout(last))
