"""Iris with Ignite: checkpoint on accuracy, progress bar, running average, macro precision/recall."""
import numpy as np
import torch
import torch.nn as nn
from ignite.contrib.handlers import ProgressBar
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import ModelCheckpoint
from ignite.metrics import Accuracy, Loss, Precision, Recall, RunningAverage
from sklearn.datasets import load_iris
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(2)
x, y = load_iris(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
perm = np.random.default_rng(2).permutation(150)
train_loader = DataLoader(TensorDataset(torch.from_numpy(x[perm[:110]]), torch.from_numpy(y[perm[:110]])),
                          batch_size=16, shuffle=True)
valid_loader = DataLoader(TensorDataset(torch.from_numpy(x[perm[110:]]), torch.from_numpy(y[perm[110:]])),
                          batch_size=64)

net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3))
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
trainer = create_supervised_trainer(net, opt, loss_fn, device="cpu")
RunningAverage(output_transform=lambda out: out).attach(trainer, "loss")
ProgressBar(persist=False).attach(trainer, ["loss"])
evaluator = create_supervised_evaluator(
    net,
    metrics={
        "accuracy": Accuracy(),
        "precision": Precision(average=True),
        "recall": Recall(average=True),
        "loss": Loss(loss_fn),
    },
)

checkpointer = ModelCheckpoint("iris_ckpt", "best", n_saved=1, require_empty=False,
                               score_function=lambda engine: engine.state.metrics["accuracy"], score_name="acc")
evaluator.add_event_handler(Events.COMPLETED, checkpointer, {"model": net})

trainer.run(train_loader, max_epochs=5)
evaluator.run(valid_loader)
metrics = evaluator.state.metrics
print("precision:", metrics["precision"], "recall:", metrics["recall"])
print("final accuracy:", metrics["accuracy"])
