"""Wine with Ignite."""
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from sklearn.datasets import load_wine
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, Loss
from ignite.handlers import EarlyStopping
from ignite.utils import manual_seed

manual_seed(0)
x, y = load_wine(return_X_y=True)
x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
idx = np.random.default_rng(0).permutation(len(x))
tr, va = idx[:140], idx[140:]
train_loader = DataLoader(TensorDataset(torch.tensor(x[tr]), torch.tensor(y[tr])), batch_size=16, shuffle=True)
val_loader = DataLoader(TensorDataset(torch.tensor(x[va]), torch.tensor(y[va])), batch_size=64)

model = nn.Sequential(nn.Linear(13, 32), nn.ReLU(), nn.Linear(32, 3))
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
criterion = nn.CrossEntropyLoss()
trainer = create_supervised_trainer(model, optimizer, criterion)
evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "nll": Loss(criterion)})


@trainer.on(Events.EPOCH_COMPLETED)
def log_validation(engine):
    evaluator.run(val_loader)
    m = evaluator.state.metrics
    print(f"epoch {engine.state.epoch}: accuracy {m['accuracy']:.3f} nll {m['nll']:.3f}")


def score_function(engine):
    return -engine.state.metrics["nll"]


handler = EarlyStopping(patience=3, score_function=score_function, trainer=trainer)
evaluator.add_event_handler(Events.COMPLETED, handler)

trainer.run(train_loader, max_epochs=6)
evaluator.run(val_loader)
print("final accuracy:", evaluator.state.metrics["accuracy"])
