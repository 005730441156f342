import torch
from ignite.contrib.handlers import ProgressBar
from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
from ignite.handlers import Checkpoint, DiskSaver, EarlyStopping, TerminateOnNan
from ignite.metrics import Accuracy, Loss, RunningAverage

from mypkg import loaders, make_model

model = make_model()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
trainer = create_supervised_trainer(model, opt, torch.nn.functional.cross_entropy)
evaluator = create_supervised_evaluator(model, metrics={"accuracy": Accuracy(), "loss": Loss(torch.nn.functional.cross_entropy)})
train_loader, val_loader = loaders()
RunningAverage(output_transform=lambda x: x).attach(trainer, "loss")
ProgressBar().attach(trainer)
trainer.add_event_handler(Events.ITERATION_COMPLETED, TerminateOnNan())


def score(engine):
    return engine.state.metrics["accuracy"]


evaluator.add_event_handler(Events.COMPLETED, EarlyStopping(patience=2, score_function=score, trainer=trainer))
saver = Checkpoint({"model": model}, DiskSaver("ckpt", require_empty=False), n_saved=2,
                   score_function=lambda e: -e.state.metrics["loss"])
evaluator.add_event_handler(Events.COMPLETED, saver)


@trainer.on(Events.EPOCH_COMPLETED)
def validate(engine):
    evaluator.run(val_loader)
    print(engine.state.epoch, evaluator.state.metrics)


trainer.run(train_loader, max_epochs=5)
