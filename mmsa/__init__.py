"""mmsa: a small, readable PyTorch package for multimodal sentiment analysis (MSA).

Reimplements DAST-GAN (EMT-DLFR + DAM + STA + adversarial DLFR), UFEN+MTFN and
CM-STA+CG+TCMFI on one shared data/trainer/metrics stack.  See README.md.
"""
from mmsa.types import Batch, ModelOutput

__version__ = "0.1.0"
__all__ = ["Batch", "ModelOutput", "__version__"]
