"""Wine with Ignite: a logging handler added with add_event_handler and a TensorBoard logger."""
import numpy as np
import torch
from ignite.contrib.handlers.tensorboard_logger import TensorboardLogger, global_step_from_engine
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
trainer = create_supervised_trainer(model, torch.optim.AdamW(model.parameters(), lr=0.01), nn.CrossEntropyLoss())
evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "loss": Loss(nn.CrossEntropyLoss())})


def log_training_loss(engine):
    if engine.state.iteration % 10 == 0:
        print("iteration", engine.state.iteration, "loss", engine.state.output)


trainer.add_event_handler(Events.ITERATION_COMPLETED, log_training_loss)
tb_logger = TensorboardLogger(log_dir="tb_wine")
tb_logger.attach_output_handler(evaluator, event_name=Events.EPOCH_COMPLETED, tag="validation",
                                metric_names=["accuracy"], global_step_transform=global_step_from_engine(trainer))
trainer.run(train_loader, max_epochs=5)
evaluator.run(val_loader)
tb_logger.close()
print("final accuracy:", evaluator.state.metrics["accuracy"])
