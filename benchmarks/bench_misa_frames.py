"""MISA at MOSI size: how much of its step is the audio/vision frames the reference toolkit skips.

The toolkit's MISA packs the audio and vision sequences with the *text* lengths, so on unaligned
MOSI it reads only the first <= 50 of 375/500 frames.  This script times our MISA (``preset="mmsa"``,
a BERT of the toolkit runner's shape) on the same batches twice, alternating: as the data are
(every valid frame) and cut like the toolkit reads them (the first text-length frames).  Run the
toolkit's ``bench.py misa`` just before and after it (../shared/peer) to bracket the comparison.

    python benchmarks/bench_misa_frames.py [--repeats 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_models as bm  # noqa: E402


def text_length_frames(b):
    """The batch as the toolkit's MISA reads it: audio/vision cut to each clip's text length."""
    n = b.text_lengths
    L = int(n.max())
    return b.replace(audio=b.audio[:, :L], vision=b.vision[:, :L],
                     audio_lengths=torch.minimum(n, b.audio_lengths), vision_lengths=torch.minimum(n, b.vision_lengths))


def main(argv=None) -> int:
    from mmsa import data as mdata
    from mmsa import efficiency as ef
    from mmsa.missing import make_train_transform
    from mmsa.models import build_for_data

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        split = mdata.load_features(str(bm.write_mosi_pickle(Path(tmp) / "unaligned_50.pkl", 64)), "mosi")["train"]
        bert = str(bm.write_toolkit_tiny_bert(Path(tmp) / "toolkit_tiny_bert"))
        torch.manual_seed(0)
        model = build_for_data("misa", split, preset="mmsa", text_model=bert).train()
        trainer = ef.timing_trainer(model, "cpu", lr=1e-4)   # the Trainer's own step (mmsa.efficiency)
        transform = make_train_transform("random", (0.0, 0.6), base_seed=0, text_bank=4)
        warm, timed = [transform(b, 1, i) for i, b in zip(range(2), mdata.make_loader(split, 32, shuffle=False, seed=0))]

        step = trainer.step

        step(warm)
        step(text_length_frames(warm))
        times = {"every valid frame": [], "text-length frames (as the toolkit)": []}
        for _ in range(a.repeats):
            for kind, b in zip(times, (timed, text_length_frames(timed))):
                t0 = time.perf_counter()
                step(b)
                times[kind].append(time.perf_counter() - t0)
    for kind, t in times.items():
        print(f"MISA, {kind:36s} {1 / float(np.median(t)):.3f} steps/s (median of {a.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
