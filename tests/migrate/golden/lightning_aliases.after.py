from lightning.pytorch import seed_everything as seed

from mypkg import LitModel, train_loader
from unified import UnifiedTrainer


class Trainer:
    """The user's own class named Trainer: not Lightning's, so not touched."""

    def __init__(self, max_epochs):
        self.max_epochs = max_epochs


seed(123)
mine = Trainer(max_epochs=3)
first = UnifiedTrainer({
    "name": "lightning_aliases",
    "seed": 123,
    "trainer": {"max_epochs": 2, "progress_bar": False},
}, backend="lightning")
first.fit(model=LitModel(), data=train_loader)
second = UnifiedTrainer({
    "name": "lightning_aliases",
    "seed": 123,
    "trainer": {"max_epochs": 1},
}, backend="lightning")
second.fit(model=LitModel(), data=train_loader)
