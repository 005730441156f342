
from mypkg import DataModule, LitModel
from unified import UnifiedTrainer

dm = DataModule()
model = LitModel()
trainer = UnifiedTrainer({
    "name": "lightning_fit_variants",
    "trainer": {"max_steps": 100, "max_epochs": None},
}, backend="lightning")
dm.prepare_data()
dm.setup("fit")
trainer.fit(model=model, data=(dm.train_dataloader(), dm.val_dataloader()))
trainer.evaluate("val", data=dm.val_dataloader())
out = [trainer.evaluate("test", data=dm.test_dataloader())]
preds = trainer.predict(dm.predict_dataloader())
print(out[0]["test/loss"], trainer.result.metrics.get("val/loss", 0.0), trainer.result.metrics["val/accuracy"])
print(trainer.result.epochs, trainer.result.global_step, trainer.result.metrics["train/loss"])
# TODO(unified migrate): 'my_custom_metric' is not a facade key (see trainer.result.metrics)
print(trainer.result.metrics["my_custom_metric"])
# TODO(unified migrate): Trainer.save_checkpoint() has no UnifiedTrainer equivalent
trainer.save_checkpoint("final.ckpt")
