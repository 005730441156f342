"""Golden before/after pairs, one per rule family (tests/migrate/golden/<name>.before.py / .after.py).

The ``.after.py`` files are the reviewed output of the tool; a change in the rewrite shows up here as a diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("libcst")

from unified.migrate import migrate_text  # noqa: E402

GOLDEN = Path(__file__).with_name("golden")
PAIRS = sorted(p.name[: -len(".before.py")] for p in GOLDEN.glob("*.before.py"))
# (rule family, does the file change, manual items left, rules that must be reported)
EXPECT = {
    "lightning_trainer_args": (True, 0, {"lightning.trainer.gpus", "lightning.trainer.precision",
                                          "lightning.trainer.gradient_clip_val", "lightning.trainer.default_root_dir"}),
    "lightning_callbacks_loggers": (True, 1, {"lightning.callbacks.earlystopping", "lightning.callbacks.modelcheckpoint",
                                               "lightning.callbacks.lr-monitor", "lightning.logger.csv",
                                               "lightning.logger.tensorboard", "lightning.logger.mlflow",
                                               "lightning.callbacks.custom"}),
    "lightning_fit_variants": (True, 2, {"lightning.trainer.fit.datamodule", "lightning.trainer.fit.ckpt-path",
                                          "lightning.trainer.validate", "lightning.trainer.test",
                                          "lightning.trainer.predict", "lightning.trainer.counters",
                                          "lightning.trainer.method"}),
    "lightning_in_main_block": (True, 0, {"lightning.metrics.dict", "lightning.metrics.key"}),
    "lightning_aliases": (True, 0, {"lightning.trainer.construct", "lightning.seed_everything"}),
    "lightning_manual_optimization": (False, 2, {"lightning.module.manual-optimization",
                                                 "lightning.trainer.left-on-lightning"}),
    "ignite_supervised": (True, 0, {"ignite.trainer.construct", "ignite.evaluator", "ignite.trainer.run",
                                    "ignite.metrics.accuracy", "ignite.metrics.recall", "ignite.state"}),
    "ignite_handlers": (True, 0, {"ignite.handler.earlystopping", "ignite.handler.checkpoint",
                                  "ignite.handler.terminate-on-nan", "ignite.progress-bar",
                                  "ignite.metrics.running-average", "ignite.handler.callback"}),
    "ignite_custom_engine": (False, 1, {"ignite.engine.custom-step"}),
    "keras_compile_fit": (True, 1, {"keras.compile", "keras.fit", "keras.fit.validation_split", "keras.evaluate",
                                    "keras.predict", "keras.history.key", "keras.seed"}),
    "keras_tfdata": (True, 0, {"keras.fit.validation_data", "keras.fit.steps_per_epoch", "keras.evaluate"}),
    "keras_callbacks": (True, 1, {"keras.callbacks.earlystopping", "keras.callbacks.modelcheckpoint",
                                  "keras.callbacks.reducelronplateau", "keras.callbacks.csvlogger",
                                  "keras.callbacks.tensorboard", "keras.callbacks.custom"}),
    "keras_nd_inputs": (True, 0, {"keras.model.nd-input", "keras.fit", "keras.fit.validation_split", "keras.evaluate"}),
    "keras_custom_loops": (False, 3, {"keras.custom-loop.gradient-tape", "keras.custom-loop.train-step",
                                      "keras.fit.left-on-keras"}),
    "not_a_framework": (False, 0, set()),
}


def test_every_pair_has_expectations():
    assert sorted(EXPECT) == PAIRS


@pytest.mark.parametrize("name", PAIRS)
def test_golden_pair(name):
    before = (GOLDEN / f"{name}.before.py").read_text()
    after = (GOLDEN / f"{name}.after.py").read_text()
    result = migrate_text(before, f"{name}.py")
    changes, manual, rules = EXPECT[name]
    assert (result.new_text or before) == after
    assert (result.new_text is not None) == changes
    assert sum(f.action == "manual" for f in result.findings) == manual, [f for f in result.findings if f.action == "manual"]
    found = {f.rule for f in result.findings}
    assert rules <= found, rules - found
    if changes:
        compile(after, name, "exec")  # the rewrite is valid Python
        assert "UnifiedTrainer" in after
    # idempotent: migrating the migrated code changes nothing
    again = migrate_text(after, f"{name}.py")
    assert again.new_text is None
    assert all(f.action != "converted" or f.rule.startswith("lightning.module") for f in again.findings) or not changes


def test_comments_and_formatting_outside_the_edits_survive():
    before = (GOLDEN / "lightning_trainer_args.before.py").read_text()
    after = (GOLDEN / "lightning_trainer_args.after.py").read_text()
    assert "# every Trainer argument the tool maps" in after
    assert "trainer.fit(model=model, data=(train_loader, val_loader))  # train" in after
    kept = [line for line in before.splitlines()[:12] if line and "pytorch_lightning" not in line]  # unused import goes
    assert kept == [line for line in after.splitlines() if line and "unified" not in line][:len(kept)]


def test_aliases_are_resolved_not_names_matched():
    after = (GOLDEN / "lightning_aliases.after.py").read_text()
    assert "mine = Trainer(max_epochs=3)" in after  # the user's own class named Trainer
    assert after.count('backend="lightning"') == 2  # T(...) and L.Trainer(...)
    untouched = (GOLDEN / "not_a_framework.after.py").read_text()
    assert untouched == (GOLDEN / "not_a_framework.before.py").read_text()
