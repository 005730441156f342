import torch
from ignite.engine import Engine

from mypkg import loader, model

optimizer = torch.optim.SGD(model.parameters(), lr=0.1)


def step(engine, batch):
    optimizer.zero_grad()
    loss = model(batch[0]).sum()
    loss.backward()
    optimizer.step()
    return loss.item()


trainer = Engine(step)
trainer.run(loader, max_epochs=2)
