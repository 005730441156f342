"""Ignite rules: ``create_supervised_trainer/evaluator``, metrics, EarlyStopping / ModelCheckpoint /
Checkpoint handlers, ProgressBar, ``trainer.run``, ``evaluator.state.metrics`` reads; ``Engine(step)``
with custom step logic and user event handlers are reported."""

from __future__ import annotations

from typing import Any, Optional

import libcst as cst

from unified.migrate import codegen
from unified.migrate.keys import facade_key
from unified.migrate.mapping import TORCH_LOSSES, TORCH_OPTIMIZERS, metrics_for, safe_name, spec_dict
from unified.migrate.rule import Rule

METRICS = {"Accuracy": "accuracy", "Precision": "precision_macro", "Recall": "recall_macro", "Fbeta": "f1_macro",
           "MeanSquaredError": "mse", "MeanAbsoluteError": "mae", "ROC_AUC": "auroc", "R2Score": "r2"}
EVENTS = {"EPOCH_COMPLETED": "on_epoch_end", "ITERATION_COMPLETED": "on_train_batch_end", "COMPLETED": "on_fit_end",
          "STARTED": "on_fit_start", "EPOCH_STARTED": "on_epoch_start"}


class IgniteRule(Rule):
    framework = "ignite"
    roots = ("ignite",)

    def plan(self) -> None:
        trainers = [c for c in self.calls if self.fw_last(c.func) == "create_supervised_trainer"]
        engines = [c for c in self.calls if self.fw_last(c.func) == "Engine"]
        for e in engines:
            step = e.args[0].value if e.args else None
            name = self.assigned_name(e)
            self.find(e, f"{self.code(e.func)}({self.code(step) if step is not None else ''})", "manual",
                      "engine.custom-step",
                      "custom step logic: not guessed at; this engine stays on Ignite (the facade runs the "
                      "supervised step: loss, backward, optimizer step)")
            del name
        if not trainers:
            return
        if engines and any(self.fw_last(c.func) == "create_supervised_trainer" for c in trainers):
            pass
        for t in trainers:
            name = self.assigned_name(t)
            if name is None:
                self.find(t, f"{self.code(t.func)}()", "manual", "trainer.unassigned", "not assigned to a name")
                continue
            self._migrate(t, name)

    # -- settings from create_supervised_trainer's arguments ----------------------------------------------
    def _optimizer(self, node: Optional[cst.BaseExpression], at: cst.CSTNode) -> dict[str, Any]:
        value = self.follow(node, at) if node is not None else None
        if isinstance(value, cst.Call):
            q = {n.rsplit(".", 1)[-1] for n in self.qnames(value.func) if n.startswith("torch.optim.")}
            for cls in q:
                if cls in TORCH_OPTIMIZERS:
                    name, kws = TORCH_OPTIMIZERS[cls]
                    out: dict[str, Any] = {"name": name}
                    lr = self.arg(value, "lr", 1)
                    if lr is not None:
                        out["lr"] = self.value(lr)
                    elif name == "sgd":
                        out["lr"] = 0.001
                    for kw, v, _ in self.keywords(value):
                        if kw in kws and kw != "lr":
                            out[kws[kw]] = self.value(v)
                            if kw == "betas":
                                out[kws[kw]] = list(out[kws[kw]]) if isinstance(out[kws[kw]], tuple) else out[kws[kw]]
                    self.find(value, f"{self.code(value.func)}()", "converted", "optimizer",
                              f"spec optimizer {name} (the facade builds it; your optimizer object is not used)")
                    return out
        self.find(at, "create_supervised_trainer(optimizer)", "manual", "optimizer",
                  "optimizer not found or not sgd/adam/adamw/rmsprop: set the spec's optimizer by hand")
        return {}

    def _loss(self, node: Optional[cst.BaseExpression], at: cst.CSTNode) -> tuple[str, str]:
        value = self.follow(node, at) if node is not None else None
        target = value.func if isinstance(value, cst.Call) else value
        if target is not None:
            for q in self.qnames(target):
                if q in TORCH_LOSSES:
                    task, loss = TORCH_LOSSES[q]
                    self.find(value, f"loss_fn={self.code(value)}", "converted", "loss", f"spec task {task}, loss {loss}")
                    return task, loss
        self.find(at, "create_supervised_trainer(loss_fn)", "manual", "loss",
                  "loss not recognised: spec assumes task classification with cross_entropy; check task/loss")
        return "classification", "cross_entropy"

    def _metric_map(self, evaluators: list[cst.Call]) -> dict[str, str]:
        """evaluator metric name -> facade key, from create_supervised_evaluator(metrics={...}) and .attach()."""
        out: dict[str, str] = {}
        for ev in evaluators:
            m = self.arg(ev, "metrics")
            m = self.follow(m, ev) if m is not None else None
            if not isinstance(m, cst.Dict):
                continue
            for el in m.elements:
                if not isinstance(el, cst.DictElement):
                    continue
                key = self.value(el.key)
                metric = self._metric(el.value, key)
                if isinstance(key, str) and metric:
                    out[key] = metric
        for call in self.calls:
            if self.method(call) == "attach" and isinstance(call.func, cst.Attribute) and isinstance(call.func.value, cst.Call):
                inner = call.func.value
                kind = self.fw_last(inner.func)
                if kind in METRICS or kind in ("Loss", "RunningAverage"):
                    key = self.value(call.args[1].value) if len(call.args) > 1 else None
                    stmt = self.stmt_of(call)
                    if kind == "RunningAverage":
                        self.find(inner, f"{self.code(inner.func)}().attach()", "converted", "metrics.running-average",
                                  "the facade logs train/loss every log_every_n_steps")
                    else:
                        metric = self._metric(inner, key)
                        if isinstance(key, str) and metric:
                            out[key] = metric
                    if stmt is not None and self.is_statement(call):
                        self.remove(stmt)
        return out

    def _metric(self, node: cst.BaseExpression, key: Any) -> Optional[str]:
        kind = self.fw_last(node.func) if isinstance(node, cst.Call) else None
        c = f"{self.code(node.func)}()" if isinstance(node, cst.Call) else self.code(node)
        if kind == "Loss":
            self.find(node, c, "converted", "metrics.loss", "val/loss (the spec's loss, summed over samples / n)")
            return "val/loss"
        if kind in ("Precision", "Recall") and isinstance(node, cst.Call):
            avg = self.arg(node, "average")
            if avg is None or self.value(avg) not in (True, "macro"):
                self.find(node, c, "unsupported", f"metrics.{kind.lower()}",
                          "per-class values (average=False): the facade has the macro average only")
                return None
        if kind in METRICS:
            self.find(node, c, "converted", f"metrics.{kind.lower()}", f"spec metric {METRICS[kind]}")
            return f"val/{METRICS[kind]}"
        self.find(node, c, "unsupported", "metrics.other", f"metric {key!r} has no facade equivalent")
        return None

    # -- the rewrite -------------------------------------------------------------------------------------
    def _migrate(self, call: cst.Call, name: str) -> None:
        model = self.arg(call, "model", 0)
        optimizer = self._optimizer(self.arg(call, "optimizer", 1), call)
        task, loss = self._loss(self.arg(call, "loss_fn", 2), call)
        for kw, v, _ in self.keywords(call):
            if kw == "device":
                self.find(v, "create_supervised_trainer(device=)", "converted", "device", "the facade chooses the device (CPU)")
            elif kw not in ("model", "optimizer", "loss_fn"):
                self.find(v, f"create_supervised_trainer({kw}=)", "unsupported", "trainer.other", "not carried over")
        evaluators = [c for c in self.calls if self.fw_last(c.func) == "create_supervised_evaluator"]
        ev_names = {n for c in evaluators if (n := self.assigned_name(c))}
        metric_map = self._metric_map(evaluators)
        keys_read = list(metric_map.values())
        callbacks: list[dict[str, Any]] = []
        trainer_cfg: dict[str, Any] = {}
        progress = False
        val_loader: Optional[str] = None
        for ev in evaluators:
            stmt = self.stmt_of(ev)
            self.find(ev, f"{self.code(ev.func)}()", "converted", "evaluator",
                      "the facade validates after every epoch with the spec's metrics")
            if stmt is not None and isinstance(self.parent(ev), cst.Assign):
                self.remove(stmt)
        # engine method calls: run, add_event_handler, on (decorators), attach
        run_calls = []
        for c in self.calls:
            recv, meth = self.receiver(c), self.method(c)
            if recv in ev_names and meth == "run":
                loader = self.code(c.args[0].value) if c.args else None
                if loader and (val_loader is None or "val" in loader.lower() or "test" in loader.lower()):
                    if val_loader is None or "train" not in loader.lower():
                        val_loader = loader if "train" not in loader.lower() or val_loader is None else val_loader
                self._evaluator_run(c, name)
            elif recv == name and meth == "run":
                run_calls.append(c)
            elif meth == "add_event_handler" and recv in ev_names | {name}:
                cb = self._handler(c, name, ev_names, metric_map)
                if cb is not None:
                    callbacks.append(cb)
            elif meth == "attach" and c.args and self.code(c.args[0].value) == name:
                inner = c.func.value if isinstance(c.func, cst.Attribute) else None
                kind = self.fw_last(inner.func) if isinstance(inner, cst.Call) else None
                stmt = self.stmt_of(c)
                if kind == "ProgressBar":
                    progress = True
                    self.find(c, "ProgressBar().attach()", "converted", "progress-bar", "the facade's progress line")
                    if stmt is not None and self.is_statement(c):
                        self.remove(stmt)
        loggers = self._tensorboard()
        # decorated handlers: @trainer.on(Events.X) / @evaluator.on(...)
        for fn in self.functions.values():
            for dec in fn.decorators:
                d = dec.decorator
                if isinstance(d, cst.Call) and self.method(d) == "on" and self.receiver(d) in ev_names | {name}:
                    event = self.code(d.args[0].value) if d.args else "?"
                    self.find(dec, f"@{self.code(d.func)}({event})", "manual", "handler.custom",
                              f"a custom event handler is not guessed at: port {fn.name.value} to a "
                              f"unified.callbacks.Callback ({self._event_hook(event)}(state): state.epoch, "
                              f"state.global_step, state.metrics['val/...']) and pass it to UnifiedTrainer(callbacks=[...])")
                    self.replace[dec] = cst.RemoveFromParent()
                    self.mark_todo(fn, f"was @{self.code(d.func)}({event}); port to a unified.callbacks.Callback "
                                       f"({self._event_hook(event)})")
        # result reads: evaluator.state.metrics[...] and trainer.state.*
        self._state_reads(name, ev_names, metric_map, keys_read)
        if not run_calls:
            self.find(call, f"{self.code(call.func)}()", "manual", "trainer.run", f"{name}.run(...) not found")
            return
        for c in run_calls:
            self._run(c, name, model, val_loader, trainer_cfg)
        seeds = [c for c in self.calls if self.fw_last(c.func) == "manual_seed"]
        seed = None
        for s in seeds:
            if s.args:
                seed = self.value(s.args[0].value)
                self.find(s, f"{self.code(s.func)}()", "converted", "seed", "kept and copied to spec seed")
        if not progress:
            trainer_cfg["progress_bar"] = False
        spec = spec_dict(name=safe_name(self.stem), seed=seed, task=task, loss=loss,
                         metrics=metrics_for(task, keys_read), optimizer=optimizer, trainer=trainer_cfg,
                         callbacks=callbacks, logging={"loggers": loggers} if loggers else None)
        self.specs.append({"line": self.pos(call)[0], "backend": "ignite", "spec": spec})
        stmt = self.stmt_of(call)
        assert stmt is not None
        self.replace[call] = self.expr(codegen.trainer_call(spec, "ignite", self.indent(stmt)))
        self.imports_needed.add(("unified", "UnifiedTrainer"))
        self.find(call, f"{self.code(call.func)}()", "converted", "trainer.construct",
                  "UnifiedTrainer(spec, backend=\"ignite\")")

    def _tensorboard(self) -> list[str]:
        """Ignite's TensorboardLogger -> spec logging.loggers: tensorboard; its statements are removed."""
        found = []
        for call in self.calls:
            if self.fw_last(call.func) != "TensorboardLogger":
                continue
            name = self.assigned_name(call)
            self.find(call, f"{self.code(call.func)}()", "converted", "logger.tensorboard",
                      "spec logging.loggers: tensorboard (the facade writes every logged key to <run_dir>/tensorboard)")
            found.append("tensorboard")
            if name is None:
                continue
            self.remove(self.stmt_of(call))
            for c in self.calls:
                if self.receiver(c) == name and self.is_statement(c):
                    self.remove(self.stmt_of(c))
                    if (self.method(c) or "").startswith("attach"):
                        self.find(c, f"{name}.{self.method(c)}()", "converted", "logger.tensorboard-handler",
                                  "the facade logs train/loss, lr and val/* to TensorBoard itself")
        return found[:1]

    @staticmethod
    def _event_hook(event: str) -> str:
        for k, v in EVENTS.items():
            if k in event:
                return v
        return "on_epoch_end"

    def _run(self, c: cst.Call, name: str, model: Optional[cst.BaseExpression], val_loader: Optional[str],
             trainer_cfg: dict[str, Any]) -> None:
        loader = self.arg(c, "data", 0)
        if loader is None or model is None:
            self.find(c, f"{name}.run()", "manual", "trainer.run", "run() without data or trainer without model")
            return
        epochs = self.arg(c, "max_epochs", 1)
        trainer_cfg["max_epochs"] = self.value(epochs) if epochs is not None else 1
        for kw, v, _ in self.keywords(c):
            if kw not in ("data", "max_epochs"):
                self.find(v, f"{name}.run({kw}=)", "unsupported", "trainer.run", "not carried over")
        data = f"({self.code(loader)}, {val_loader})" if val_loader else self.code(loader)
        self.replace[c] = self.expr(f"{name}.fit(model={self.code(model)}, data={data})")
        self.find(c, f"{name}.run()", "converted", "trainer.run",
                  f"{name}.fit(model=..., data=(train, val)): max_epochs -> spec trainer.max_epochs")

    def _evaluator_run(self, c: cst.Call, name: str) -> None:
        """``evaluator.run(loader)`` at the top level -> ``val_metrics = trainer.evaluate("val", data=loader)``."""
        stmt = self.stmt_of(c)
        fn = self.func_of(c)
        if isinstance(self.parent(c), cst.Lambda):
            return  # a handler lambda, see _handler
        if fn is not None and any(self.method(d.decorator) == "on" for d in fn.decorators
                                  if isinstance(d.decorator, cst.Call)):
            return  # inside a handler that is reported as manual
        if stmt is None or not self.is_statement(c):
            self.find(c, f"{self.code(c.func)}()", "manual", "evaluator.run", "evaluator.run() result used: not migrated")
            return
        loader = self.code(c.args[0].value) if c.args else None
        self.replace[stmt] = self.stmt(f'val_metrics = {name}.evaluate("val"' + (f", data={loader})" if loader else ")"))
        self.find(c, f"{self.code(c.func)}()", "converted", "evaluator.run",
                  f'val_metrics = {name}.evaluate("val", data=...): a dict of val/* keys')

    def _handler(self, c: cst.Call, name: str, ev_names: set[str], metric_map: dict[str, str]
                 ) -> Optional[dict[str, Any]]:
        stmt = self.stmt_of(c)
        handler = c.args[1].value if len(c.args) > 1 else None
        node = self.follow(handler, c) if handler is not None else None
        kind = self.fw_last(node.func) if isinstance(node, cst.Call) else None
        construct = f"{self.code(c.func)}({self.code(c.args[0].value) if c.args else ''}, {kind or self.code(handler) if handler is not None else ''})"
        if kind in ("EarlyStopping", "ModelCheckpoint", "Checkpoint"):
            assert isinstance(node, cst.Call)
            score = self.arg(node, "score_function", 1 if kind == "EarlyStopping" else None)
            monitor, mode = self._score(score, metric_map)
            if kind == "EarlyStopping":
                pat = self.arg(node, "patience", 0)
                if monitor is None:
                    self.find(node, construct, "manual", "handler.earlystopping",
                              "score_function not understood: set the spec's early_stopping monitor by hand")
                    return None
                cfg: dict[str, Any] = {"monitor": monitor, "mode": mode, "patience": self.value(pat) if pat is not None else 3}
                delta = self.arg(node, "min_delta")
                if delta is not None:
                    cfg["min_delta"] = self.value(delta)
                out = {"early_stopping": cfg}
                hint = f"spec callback early_stopping on {monitor}"
            else:
                n = self.arg(node, "n_saved")
                cfg = {"monitor": monitor or "val/loss", "mode": mode if monitor else "min",
                       "save_top_k": self.value(n) if n is not None else 1}
                if monitor is None:
                    cfg = {"save_top_k": 0, "save_last": True}
                out = {"model_checkpoint": cfg}
                hint = "spec callback model_checkpoint; files go to <run_dir>/checkpoints"
            self.find(node, construct, "converted", f"handler.{kind.lower()}", hint)
            if stmt is not None and self.is_statement(c):
                self.remove(stmt)
            if isinstance(handler, cst.Name) and isinstance(self.parent(node), cst.Assign):
                s2 = self.stmt_of(node)
                if s2 is not None:
                    self.remove(s2)
            return out
        if kind == "TerminateOnNan":
            if stmt is not None and self.is_statement(c):
                self.remove(stmt)
            self.find(node, construct, "converted", "handler.terminate-on-nan", "spec callback terminate_on_nan")
            return {"terminate_on_nan": {}}
        event = self.code(c.args[0].value) if c.args else "?"
        if (isinstance(handler, cst.Lambda) and isinstance(handler.body, cst.Call) and self.method(handler.body) == "run"
                and self.receiver(handler.body) in ev_names and "EPOCH_COMPLETED" in event):
            self.find(c, construct, "converted", "handler.validate-each-epoch", "the facade validates after every epoch")
            if stmt is not None and self.is_statement(c):
                self.remove(stmt)
            return None
        self.find(c, construct, "manual", "handler.custom",
                  f"a custom event handler is not guessed at: port it to a unified.callbacks.Callback "
                  f"({self._event_hook(event)}) and pass it to UnifiedTrainer(callbacks=[...])")
        if stmt is not None and self.is_statement(c):
            self.remove(stmt)
            fn = self.functions.get(self.code(handler)) if handler is not None else None
            if fn is not None:
                self.mark_todo(fn, f"was {self.code(c.func)}({event}, ...); port to a unified.callbacks.Callback "
                                   f"({self._event_hook(event)})")
        return None

    def _score(self, score: Optional[cst.BaseExpression], metric_map: dict[str, str]) -> tuple[Optional[str], str]:
        """(facade key, mode) from an Ignite score_function (a lambda or a def returning +-metrics[...])."""
        if score is None:
            return None, "min"
        body: Optional[cst.BaseExpression] = None
        if isinstance(score, cst.Lambda):
            body = score.body
        elif isinstance(score, cst.Name) and score.value in self.functions:
            fn = self.functions[score.value]
            for s in fn.body.body:
                if isinstance(s, cst.SimpleStatementLine):
                    for small in s.body:
                        if isinstance(small, cst.Return) and small.value is not None:
                            body = small.value
        if body is None:
            return None, "min"
        negate = isinstance(body, cst.UnaryOperation) and isinstance(body.operator, cst.Minus)
        if negate:
            body = body.expression
        if isinstance(body, cst.Subscript) and isinstance(body.slice[0].slice, cst.Index):
            key = self.value(body.slice[0].slice.value)
            new = metric_map.get(key) or (facade_key(key, "val") if isinstance(key, str) else None)
            if new:
                return new, "min" if negate else "max"
        return None, "min"

    def _state_reads(self, name: str, ev_names: set[str], metric_map: dict[str, str], keys_read: list[str]) -> None:
        for attr in self.attributes:
            # evaluator.state.metrics
            if (attr.attr.value == "metrics" and isinstance(attr.value, cst.Attribute) and attr.value.attr.value == "state"
                    and isinstance(attr.value.value, cst.Name) and attr.value.value.value in ev_names):
                fn = self.func_of(attr)
                if fn is not None and any(isinstance(d.decorator, cst.Call) and self.method(d.decorator) == "on"
                                          for d in fn.decorators):
                    continue  # inside a manual handler
                self.replace[attr] = cst.Name("val_metrics")
                parent = self.parent(attr)
                if isinstance(parent, cst.Subscript) and isinstance(parent.slice[0].slice, cst.Index):
                    key = self.value(parent.slice[0].slice.value)
                    new = metric_map.get(key) if isinstance(key, str) else None
                    new = new or (facade_key(key, "val") if isinstance(key, str) else None)
                    if new is None:
                        self.find(parent, f"{self.code(attr)}[{key!r}]", "manual", "metrics.key", "no facade key")
                        continue
                    keys_read.append(new)
                    self.replace[parent.slice[0].slice.value] = self.key_node(parent.slice[0].slice.value, new)
                    self.find(parent, f"{self.code(attr)}[{key!r}]", "converted", "metrics.key", f'val_metrics["{new}"]')
                else:
                    self.find(attr, self.code(attr), "converted", "metrics.dict",
                              "val_metrics: keys are the facade's (val/loss, val/accuracy ...)")
                    self._rename_keys(attr, metric_map, keys_read)
            # trainer.state.epoch / iteration
            elif (isinstance(attr.value, cst.Attribute) and attr.value.attr.value == "state"
                  and isinstance(attr.value.value, cst.Name) and attr.value.value.value == name):
                fn = self.func_of(attr)
                if fn is not None and any(isinstance(d.decorator, cst.Call) for d in fn.decorators):
                    continue
                field = {"epoch": "epochs", "iteration": "global_step"}.get(attr.attr.value)
                if field is None:
                    self.find(attr, self.code(attr), "manual", "state", "no facade equivalent")
                    continue
                self.replace[attr] = self.expr(f"{name}.result.{field}")
                self.find(attr, self.code(attr), "converted", "state", f"{name}.result.{field}")

    def _rename_keys(self, attr: cst.Attribute, metric_map: dict[str, str], keys_read: list[str]) -> None:
        """``m = evaluator.state.metrics`` then ``m["accuracy"]``: map the keys read through ``m``."""
        parent = self.parent(attr)
        if not (isinstance(parent, cst.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0].target, cst.Name)):
            return
        alias = parent.targets[0].target.value
        for sub in self.subscripts:
            if isinstance(sub.value, cst.Name) and sub.value.value == alias and isinstance(sub.slice[0].slice, cst.Index):
                if self.func_of(sub) is not self.func_of(attr):
                    continue
                key = self.value(sub.slice[0].slice.value)
                new = metric_map.get(key) if isinstance(key, str) else None
                new = new or (facade_key(key, "val") if isinstance(key, str) else None)
                if new:
                    keys_read.append(new)
                    self.replace[sub.slice[0].slice.value] = self.key_node(sub.slice[0].slice.value, new)
                    self.find(sub, f"{alias}[{key!r}]", "converted", "metrics.key", f'{alias}["{new}"]')
                else:
                    self.find(sub, f"{alias}[{key!r}]", "manual", "metrics.key", "no facade key")
