"""Ignite checkpoint save / resume (Checkpoint + DiskSaver, n_saved=None, every 2 epochs), flattened digits."""
import os
import tempfile

import numpy as np
import torch
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import Checkpoint, DiskSaver
from ignite.metrics import Accuracy
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype(np.float32)
train_loader = DataLoader(TensorDataset(torch.from_numpy(x[:1400]), torch.from_numpy(y[:1400])), batch_size=32,
                          shuffle=True)
val_loader = DataLoader(TensorDataset(torch.from_numpy(x[1400:]), torch.from_numpy(y[1400:])), batch_size=256)

model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy()})
to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
folder = tempfile.mkdtemp()
handler = Checkpoint(to_save, DiskSaver(folder, create_dir=True), n_saved=None)
trainer.add_event_handler(Events.EPOCH_COMPLETED(every=2), handler)
trainer.run(train_loader, max_epochs=2)

# resume from the last checkpoint and train two more epochs
checkpoint = torch.load(os.path.join(folder, handler.last_checkpoint), weights_only=False)
Checkpoint.load_objects(to_load=to_save, checkpoint=checkpoint)
trainer.run(train_loader, max_epochs=4)
evaluator.run(val_loader)
print("final accuracy:", evaluator.state.metrics["accuracy"])
