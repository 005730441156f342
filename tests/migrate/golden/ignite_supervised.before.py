import torch
from ignite.engine import create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Accuracy, Loss, Precision, Recall

from mypkg import loaders, make_model

model = make_model()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
loss = torch.nn.CrossEntropyLoss()
trainer = create_supervised_trainer(model, optimizer, loss, device="cpu")
evaluator = create_supervised_evaluator(model, metrics={
    "acc": Accuracy(),
    "nll": Loss(loss),
    "prec": Precision(average=True),
    "rec": Recall(),
})
train_loader, val_loader = loaders()
trainer.run(train_loader, max_epochs=3)
evaluator.run(val_loader)
print(evaluator.state.metrics["acc"], evaluator.state.metrics["nll"], trainer.state.epoch, trainer.state.iteration)
