"""Classic baselines on the shared Batch/ModelOutput interface (docs/design.md §3.6).

One file per family, each read top to bottom like its paper's method section:

    lf_dnn.py         LF-DNN   late fusion of three utterance vectors
    ef_lstm.py        EF-LSTM  early fusion: one LSTM over the frame-wise concatenation
    tensor_fusion.py  TFN, LMF (low-rank) tensor fusion
    mult.py           MulT     crossmodal transformers for unaligned sequences
    misa.py           MISA     modality-invariant and -specific subspaces
    self_mm.py        Self-MM  self-supervised unimodal labels, multi-task heads
    tfr_net.py        TFR-Net  alignment + reconstruction of dropped features + gated fusion
    common.py         what every baseline shares (config keys, presets, inputs, small modules)

Every baseline reads only what a deployed model could: the input values and the valid lengths,
never the simulator's masks (``tests/test_no_oracle.py``); text always goes through
``mmsa.encoders.TextEncoder`` (frozen MiniLM by default).  ``preset="mmsa"`` gives the reference
toolkit's MOSI sizes (``MMSA_TRAIN`` holds its training settings).  Regression: L1 loss (the
field's default for MOSI/MOSEI/SIMS); classification: cross-entropy.
"""
from mmsa.models.baselines.common import MMSA_TRAIN, BaselineConfig, masked_mean  # noqa: F401
from mmsa.models.baselines.ef_lstm import EFLSTM, EFLSTMConfig, segment_average  # noqa: F401
from mmsa.models.baselines.lf_dnn import LFDNN, LFDNNConfig  # noqa: F401
from mmsa.models.baselines.misa import MISA, MISAConfig, cmd, soft_orthogonality  # noqa: F401
from mmsa.models.baselines.mult import MulT, MulTConfig  # noqa: F401
from mmsa.models.baselines.self_mm import SelfMM, SelfMMConfig, UnimodalLabelGenerator  # noqa: F401
from mmsa.models.baselines.tensor_fusion import LMF, TFN, LMFConfig, TFNConfig  # noqa: F401
from mmsa.models.baselines.tfr_net import TFRNet, TFRNetConfig  # noqa: F401

CONFIGS = {"lf_dnn": LFDNNConfig, "ef_lstm": EFLSTMConfig, "tfn": TFNConfig, "lmf": LMFConfig, "mult": MulTConfig,
           "misa": MISAConfig, "self_mm": SelfMMConfig, "tfr_net": TFRNetConfig}
