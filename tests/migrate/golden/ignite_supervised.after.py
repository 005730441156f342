import torch

from mypkg import loaders, make_model
from unified import UnifiedTrainer

model = make_model()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
loss = torch.nn.CrossEntropyLoss()
trainer = UnifiedTrainer({
    "name": "ignite_supervised",
    "metrics": ["accuracy", "f1_macro", "precision_macro"],
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
    "trainer": {"max_epochs": 3, "progress_bar": False},
}, backend="ignite")
train_loader, val_loader = loaders()
trainer.fit(model=model, data=(train_loader, val_loader))
val_metrics = trainer.evaluate("val", data=val_loader)
print(val_metrics["val/accuracy"], val_metrics["val/loss"], trainer.result.epochs, trainer.result.global_step)
