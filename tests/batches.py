"""Shared test inputs: BERT-style token ids for given sentence lengths."""
import torch

from mmsa.encoders import CLS_ID, SEP_ID


def bert_ids(lengths: torch.Tensor, L: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) of shape (B, L): [CLS] random words [SEP] then padding 0, each row ``lengths[b]`` long."""
    ids = torch.randint(1000, 2000, (len(lengths), L), generator=generator)
    ids[:, 0] = CLS_ID
    for b, n in enumerate(lengths.tolist()):
        ids[b, n - 1] = SEP_ID
        ids[b, n:] = 0
    return ids, (torch.arange(L)[None] < lengths[:, None]).long()
