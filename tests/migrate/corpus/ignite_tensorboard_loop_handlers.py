"""Ignite with a TensorBoard logger and handlers registered in a loop (the for loop must survive)."""
import tempfile

import numpy as np
import torch
from ignite.contrib.handlers.tensorboard_logger import TensorboardLogger
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, Loss
from sklearn.datasets import load_wine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x, y = load_wine(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
train_loader = DataLoader(TensorDataset(torch.from_numpy(x[::2]), torch.from_numpy(y[::2])), batch_size=8,
                          shuffle=True)
val_loader = DataLoader(TensorDataset(torch.from_numpy(x[1::2]), torch.from_numpy(y[1::2])), batch_size=64)
model = nn.Sequential(nn.Linear(13, 16), nn.ReLU(), nn.Linear(16, 3))
trainer = create_supervised_trainer(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.CrossEntropyLoss())
evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "loss": Loss(nn.CrossEntropyLoss())})
trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(val_loader))
tb_logger = TensorboardLogger(log_dir=tempfile.mkdtemp())
tb_logger.attach_output_handler(evaluator, event_name=Events.EPOCH_COMPLETED, tag="validation",
                                metric_names=["accuracy", "loss"])
seen = []
for event in (Events.STARTED, Events.COMPLETED):
    trainer.add_event_handler(event, lambda engine, e=event: seen.append(str(e)))
trainer.run(train_loader, max_epochs=4)
tb_logger.close()
print("events", seen)
print("final accuracy:", evaluator.state.metrics["accuracy"])
