import torch

from mypkg import loaders, make_model
from unified import UnifiedTrainer

model = make_model()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
trainer = UnifiedTrainer({
    "name": "ignite_handlers",
    "optimizer": {"name": "adam", "lr": 0.001},
    "trainer": {"max_epochs": 5},
    "callbacks": [
        {"terminate_on_nan": {}},
        {"early_stopping": {"monitor": "val/accuracy", "mode": "max", "patience": 2}},
        {"model_checkpoint": {"monitor": "val/loss", "mode": "min", "save_top_k": 2}},
    ],
}, backend="ignite")
train_loader, val_loader = loaders()


def score(engine):
    return engine.state.metrics["accuracy"]


# TODO(unified migrate): was @trainer.on(Events.EPOCH_COMPLETED); port to a unified.callbacks.Callback (on_epoch_end)
def validate(engine):
    evaluator.run(val_loader)
    print(engine.state.epoch, evaluator.state.metrics)


trainer.fit(model=model, data=(train_loader, val_loader))
