"""Run by tests/test_ddp.py under torchrun: two CPU processes (gloo) train LF-DNN with DDP."""
import json
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_train import ToySplit, loader, model  # noqa: E402

from mmsa.train import Trainer, TrainConfig  # noqa: E402

torch.set_num_threads(1)
tr, va = ToySplit(64, 0), ToySplit(32, 1)
t = Trainer(model(), TrainConfig(epochs=3, lr=1e-2, progress=False, patience=100, seed=3, out_dir=sys.argv[1]))
t.fit(loader(tr, True), loader(va))
# after every step the replicas must hold identical weights
flat = torch.cat([p.detach().flatten() for p in t.model.parameters()])
gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
dist.all_gather(gathered, flat)
if dist.get_rank() == 0:
    same = all(torch.equal(gathered[0], g) for g in gathered[1:])
    print(json.dumps({"world": dist.get_world_size(), "same": same, "epochs": len(t.history)}))
dist.barrier()  # both ranks done before the group goes (a rank leaving early aborts the other)
dist.destroy_process_group()
