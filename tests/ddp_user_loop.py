"""A user's own training loop with an emitted loss file under DDP (run by tests/test_ddp.py with torchrun).

``python -m torch.distributed.run --nproc_per_node 2 tests/ddp_user_loop.py LOSS_FILE OUT`` runs two modes and
writes, per mode, the largest difference between the ranks' parameters after two steps on different data:
``supported`` wraps the student and the attached loss in one module (the documented way); ``attached-only``
wraps only the module ``attach`` returns, which leaves the student's gradients un-reduced.
"""

import importlib.util
import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from autokd_dsl.models import create_model


class Distilled(nn.Module):
    """The student and the attached loss (its connectors) in one module tree: what DDP and .to() need."""

    def __init__(self, student, attached):
        super().__init__()
        self.student, self.attached = student, attached

    def forward(self, x, labels=None, epoch=0):
        return self.attached(x, labels=labels, epoch=epoch)


def train(kd_loss, mode: str, rank: int) -> dict:
    torch.manual_seed(0)
    teacher, student = create_model("resnet8", num_classes=10), create_model("resnet8", num_classes=10)
    attached = kd_loss.attach(teacher, student)
    model = DDP(Distilled(student, attached)) if mode == "supported" else DDP(attached)
    opt = torch.optim.SGD([*student.parameters(), *attached.parameters()], lr=0.1)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own data
    for _ in range(2):
        x, y = torch.randn(8, 3, 16, 16, generator=gen), torch.randint(0, 10, (8,), generator=gen)
        _, losses = model(x, labels=y, epoch=1)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
    flat = {"student": torch.cat([p.detach().flatten() for p in student.parameters()]),
            "connectors": torch.cat([p.detach().flatten() for p in attached.parameters()])}
    gaps = {}
    for part, value in flat.items():
        gathered = [torch.empty_like(value) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, value)
        gaps[part] = float((gathered[0] - gathered[1]).abs().max())
    return gaps


def main(path: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    spec = importlib.util.spec_from_file_location("kd_loss", path)
    kd_loss = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kd_loss)
    gaps = {mode: train(kd_loss, mode, dist.get_rank()) for mode in ("supported", "attached-only")}
    if dist.get_rank() == 0:
        with open(out, "w") as f:
            json.dump(gaps, f)
    dist.barrier()  # neither rank tears the group down while the other still uses it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
