"""Run by tests/test_ddp.py under torchrun: two CPU processes train DAST-GAN with its GAN on.

The discriminator is stepped by the GANSchedule callback outside DDP; its gradients must be
averaged across ranks, or the replicas' discriminators drift apart."""
import json
import sys

import torch
import torch.distributed as dist

from mmsa.data import load_features, make_loader
from mmsa.models import build
from mmsa.train import Trainer, TrainConfig

torch.set_num_threads(1)
path, out = sys.argv[1], sys.argv[2]
splits = load_features(path, "synth_mosi", verbose=False)
torch.manual_seed(0)
model = build("dast_gan", dataset="synth_mosi", text_model="tiny", text_dim=32, audio_dim=splits["train"].dims[1],
              vision_dim=splits["train"].dims[2], d_model=16, n_layers=1, n_heads=2, sta_steps=4, dam_hidden=8,
              proj_dim=8, pred_hidden=8, mlp_hidden=16, disc_hidden=(16, 8), gan_warmup=0, gan_ramp=0)


class CompareDiscriminators:
    """After every epoch (before fit() hands rank 0's weights to all): are the D replicas equal?"""

    same = []

    def on_epoch_end(self, trainer, epoch, logs):
        flat = torch.cat([p.detach().flatten() for p in trainer.model.discriminator.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, flat)
        self.same.append(all(torch.equal(gathered[0], g) for g in gathered[1:]))


check = CompareDiscriminators()
t = Trainer(model, TrainConfig(epochs=2, lr=1e-3, progress=False, patience=100, seed=3, out_dir=out),
            callbacks=model.training_callbacks() + [check])
t.fit(make_loader(splits["train"], 8, shuffle=True, seed=1), make_loader(splits["valid"], 8))
if dist.get_rank() == 0:
    moved = bool(t.history[-1].get("d_loss") is not None)
    print(json.dumps({"world": dist.get_world_size(), "same_discriminator": all(check.same), "d_stepped": moved}))
dist.barrier()  # both ranks done before the group goes (a rank leaving early aborts the other)
dist.destroy_process_group()
