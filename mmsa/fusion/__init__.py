"""Fusion blocks: EMT mutual promotion (``emt``), DAST-GAN's DAM (``dam``) and STA (``sta``)."""
from mmsa.fusion.emt import EMT, AttentionPooling, PromotionBlock, masked_attention, sinusoidal_positions

__all__ = ["EMT", "AttentionPooling", "PromotionBlock", "masked_attention", "sinusoidal_positions"]
