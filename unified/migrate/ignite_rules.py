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

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.names: list[cst.Name] = []
        self.ra_keys: set[str] = set()

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
        from unified.migrate.lightning_rules import ND_LAYERS

        nd = [c for c in self.calls if any(q.startswith("torch.nn.") and q.rsplit(".", 1)[-1] in ND_LAYERS
                                           for q in self.qnames(c.func))]
        if nd:  # reported only when the file is rewritten (an unchanged file reports no conversion)
            self.find(nd[0], f"{self.code(nd[0].func)}(...)", "converted", "model.nd-input",
                      "N-D inputs (images, sequences, token ids): your model and your loaders' batches reach "
                      "the facade unchanged, in their own layout")
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
                        src = self.arg(inner, "src", 0)
                        if not self.is_statement(call):
                            self.find(inner, f"{self.code(inner.func)}().attach()", "manual", "metrics.running-average",
                                      "attach() inside an expression is not removed: the facade logs train/loss "
                                      "itself; remove this use")
                            continue
                        if src is not None:
                            self.find(inner, f"{self.code(inner.func)}({self.code(src)}).attach()", "manual",
                                      "metrics.running-average",
                                      "a running average of a training metric: the facade computes metrics on the "
                                      "validation data only (train/loss is the only training key)")
                            continue
                        if isinstance(key, str):
                            self.ra_keys.add(key)
                        self.find(inner, f"{self.code(inner.func)}().attach()", "converted", "metrics.running-average",
                                  "the loss's running average: the facade logs train/loss every log_every_n_steps "
                                  f"(engine.state.metrics[{self.src(key)}] -> state.metrics[\"train/loss\"])")
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
        self.find(node, c, "unsupported", "metrics.other", f"metric {self.src(key)} has no facade equivalent")
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
        self.hooks: list[tuple[int, str, Optional[str], str, bool]] = []  # (line, hook, guard, function, takes state)
        self.val_runs: list[tuple[Optional[cst.FunctionDef], int]] = []
        self.handler_fns = self._handler_functions(ev_names | {name})
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
                    construct = f"@{self.code(d.func)}({event})"
                    why = self._convert_handler(fn, event, self.receiver(d) or name, name, ev_names, metric_map,
                                                construct, dec)
                    if why is None:
                        self.replace[dec] = cst.RemoveFromParent()
                        continue
                    self.find(dec, construct, "manual", "handler.custom",
                              f"{fn.name.value} is not converted ({why}): port it to a unified.callbacks.Callback "
                              f"({self._event_hook(event)}(state): state.epoch, state.global_step, "
                              f"state.metrics['val/...']) and pass it to UnifiedTrainer(callbacks=[...])")
        for c in self.calls:
            if self.method(c) == "load_objects" and self.fw_last(c.func) in ("load_objects", None):
                self.find(c, f"{self.code(c.func)}(...)", "manual", "checkpoint.resume",
                          "resuming through Checkpoint.load_objects: the facade resumes with "
                          "trainer.fit(..., resume=<run_dir or checkpoints/last.ckpt>)")
        # result reads: evaluator.state.metrics[...] and trainer.state.*
        self._state_reads(name, ev_names, metric_map, keys_read)
        if not run_calls:
            self.find(call, f"{self.code(call.func)}()", "manual", "trainer.run", f"{name}.run(...) not found")
            return
        for i, c in enumerate(run_calls):
            if i == 0:
                self._run(c, name, model, val_loader, trainer_cfg)
                continue
            self.find(c, f"{name}.run()", "manual", "trainer.run-again",
                      f"a second {name}.run() continues the engine where it stopped; UnifiedTrainer.fit starts "
                      f"afresh: continue with {name}.fit(model=..., data=..., resume={name}.result.run_dir) and "
                      "a larger trainer.max_epochs")
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
        ctor = codegen.trainer_call(spec, "ignite", self.indent(stmt))
        if self.hooks:
            cls = self.free_name("MigratedHandlers")
            ctor = ctor[:-1] + f", callbacks=[{cls}()])"
            blank = 2 if self.func_of(stmt) is None else 1
            cls_stmt = self.stmt(self._callback_class(cls)).with_changes(leading_lines=[cst.EmptyLine()] * blank)
            self.before.setdefault(stmt, []).append(cls_stmt)
            self.blank_after[stmt] = blank
            self.imports_needed.add(("unified.callbacks", "Callback"))
        self.replace[call] = self.expr(ctor)
        self.imports_needed.add(("unified", "UnifiedTrainer"))
        self.find(call, f"{self.code(call.func)}()", "converted", "trainer.construct",
                  "UnifiedTrainer(spec, backend=\"ignite\")")

    def _callback_class(self, cls: str) -> str:
        """The generated Callback calling the converted handlers from the facade's hooks, in their order."""
        lines = [f"class {cls}(Callback):",
                 '    """Your Ignite event handlers, called from the facade\'s hooks (generated by unified migrate)."""']
        by_hook: dict[str, list[tuple[Optional[str], str]]] = {}
        for _, hook, guard, fn, _takes in sorted(self.hooks):
            by_hook.setdefault(hook, []).append((guard, fn))
        for hook, calls in by_hook.items():
            lines += ["", f"    def {hook}(self, state):"]
            for guard, fn in calls:
                if guard:
                    lines += [f"        if {guard}:", f"            {fn}(state)"]
                else:
                    lines.append(f"        {fn}(state)")
        return "\n".join(lines) + "\n"

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
        if self._in_handler(c):
            return  # inside an event handler (converted to a Callback hook, or manual)
        if stmt is None or not self.is_statement(c):
            self.find(c, f"{self.code(c.func)}()", "manual", "evaluator.run", "evaluator.run() result used: not migrated")
            return
        loader = self.code(c.args[0].value) if c.args else None
        self.replace[stmt] = self.stmt(f'val_metrics = {name}.evaluate("val"' + (f", data={loader})" if loader else ")"))
        self.val_runs.append((fn, self.pos(c)[0]))
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
                n_saved = self.value(n) if n is not None else 1
                if not (n_saved is None or isinstance(n_saved, int)):
                    self.find(node, construct, "manual", f"handler.{kind.lower()}",
                              f"n_saved={self.src(n_saved)} is not a literal: set model_checkpoint.save_top_k by hand")
                    return None
                hint = "spec callback model_checkpoint; files go to <run_dir>/checkpoints"
                if monitor is not None:
                    cfg = {"monitor": monitor, "mode": mode, "save_top_k": -1 if n_saved is None else n_saved}
                    hint += "; n_saved=None: save_top_k -1 (keep all)" if n_saved is None else ""
                elif n_saved == 1:
                    cfg = {"save_top_k": 0, "save_last": True}
                    hint += " (last.ckpt: the latest epoch)"
                else:
                    cfg = {"save_top_k": -1, "save_last": True}
                    hint += (" (no score_function: every epoch is kept, "
                             + ("as n_saved=None does)" if n_saved is None else f"not only the {n_saved} latest)"))
                ev = self.code(c.args[0].value) if c.args else ""
                import re as _re

                every = _re.search(r"every\s*=\s*(\d+)", ev)
                if every:
                    cfg["every_n_epochs"] = int(every[1])
                    hint += f"; every={every[1]} -> every_n_epochs"
                for kw, v, _ in self.keywords(node):
                    if kw in ("dirname", "save_handler", "filename_prefix", "require_empty", "create_dir", "to_save",
                              "score_name", "global_step_transform", "filename_pattern", "include_self"):
                        if kw in ("dirname", "save_handler", "filename_prefix", "filename_pattern"):
                            hint += f"; {kw}= not used (files go to <run_dir>/checkpoints)"
                    elif kw not in ("n_saved", "score_function"):
                        self.find(v, f"{kind}({kw}=)", "unsupported", f"handler.{kind.lower()}", "not carried over")
                out = {"model_checkpoint": cfg}
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
        fn = self.functions.get(self.code(handler)) if isinstance(handler, cst.Name) else None
        why = ("a lambda" if isinstance(handler, cst.Lambda) else "not a function of this file") if fn is None else (
            "extra handler arguments" if len(c.args) != 2 else (
                "its result is used" if not self.is_statement(c) else None))
        if fn is not None and why is None:
            why = self._convert_handler(fn, event, self.receiver(c) or name, name, ev_names, metric_map, construct, c)
            if why is None:
                if stmt is not None:
                    self.remove(stmt)
                return None
        self.find(c, construct, "manual", "handler.custom",
                  f"event handler not converted ({why}): port it to a unified.callbacks.Callback "
                  f"({self._event_hook(event)}) and pass it to UnifiedTrainer(callbacks=[...])")
        return None

    # -- event handlers that only print or log -> a generated Callback --------------------------------------
    def visit_Name(self, node: cst.Name) -> None:
        self.names.append(node)

    def _handler_functions(self, engines: set[str]) -> set[cst.FunctionDef]:
        out = set()
        for fn in self.functions.values():
            if any(isinstance(d.decorator, cst.Call) and self.method(d.decorator) == "on"
                   and self.receiver(d.decorator) in engines for d in fn.decorators):
                out.add(fn)
        for c in self.calls:
            if self.method(c) == "add_event_handler" and self.receiver(c) in engines and len(c.args) > 1:
                h = c.args[1].value
                if isinstance(h, cst.Name) and h.value in self.functions:
                    out.add(self.functions[h.value])
        return out

    def _inside(self, node: cst.CSTNode, fn: cst.CSTNode) -> bool:
        cur = self.parent(node)
        while cur is not None:
            if cur is fn:
                return True
            cur = self.parent(cur)
        return False

    def _in_handler(self, node: cst.CSTNode) -> bool:
        return any(self._inside(node, fn) for fn in getattr(self, "handler_fns", ()))

    def _convert_handler(self, fn: cst.FunctionDef, event: str, recv: str, name: str, ev_names: set[str],
                         metric_map: dict[str, str], construct: str, at: cst.CSTNode) -> Optional[str]:
        """Plan ``fn`` as a facade Callback hook; None when done, else why it cannot be.

        Convertible: a handler on EPOCH_COMPLETED / ITERATION_COMPLETED / COMPLETED / STARTED (``every=N``
        filters too) of the trainer, or COMPLETED of an evaluator, whose body only reads ``engine.state``
        counters and metrics (mapped to the facade's ``TrainState``: epoch, global_step, last_loss,
        metrics with facade keys) and runs the evaluator on the validation data (the facade validates every
        epoch); everything else in it (print, logging, writers) is kept as it is.
        """
        import re

        base, _, filt = event.partition("(")
        kind = base.rsplit(".", 1)[-1]
        every = None
        if filt:
            m = re.fullmatch(r"\s*every\s*=\s*(\d+)\s*\)\s*", filt)
            if m is None:
                return f"event filter {event}"
            every = int(m[1])
        evaluator = recv != name
        if evaluator:
            hook = "on_epoch_end" if kind in ("COMPLETED", "EPOCH_COMPLETED") and every is None else None
        else:
            hook = {"EPOCH_COMPLETED": "on_epoch_end", "ITERATION_COMPLETED": "on_train_batch_end",
                    "COMPLETED": "on_fit_end", "STARTED": "on_fit_start", "EPOCH_STARTED": "on_epoch_start"}.get(kind)
        if hook is None:
            return f"event {event} has no facade hook"
        guard = None
        if every is not None:
            guard = f"state.{'global_step' if hook == 'on_train_batch_end' else 'epoch'} % {every} == 0"
        params = fn.params.params
        if len(params) != 1 or fn.params.star_arg is not cst.MaybeSentinel.DEFAULT or fn.params.kwonly_params:
            return "its parameters are not (engine)"
        param = params[0].name.value
        edits: dict[cst.CSTNode, Any] = {}
        covered: set[int] = set()
        ra = getattr(self, "ra_keys", set())

        def key_of(node: cst.BaseExpression, role: str) -> Optional[str]:
            k = self.value(node)
            if not isinstance(k, str):
                return None
            if role == "trainer":
                return "train/loss" if k in ra else None
            return metric_map.get(k) or facade_key(k, "val")

        def metrics_keys(attr: cst.Attribute, role: str) -> Optional[str]:
            """Map the keys read from ``<x>.state.metrics`` (directly or through a name) inside fn."""
            parent = self.parent(attr)
            if isinstance(parent, cst.Subscript) and len(parent.slice) == 1 and isinstance(parent.slice[0].slice, cst.Index):
                new = key_of(parent.slice[0].slice.value, role)
                if new is None:
                    return f"metric {self.code(parent.slice[0].slice.value)} has no facade key"
                edits[parent.slice[0].slice.value] = self.key_node(parent.slice[0].slice.value, new)
                return None
            if isinstance(parent, cst.Assign) and len(parent.targets) == 1 and isinstance(parent.targets[0].target, cst.Name):
                alias = parent.targets[0].target.value
                for sub in self.subscripts:
                    if (isinstance(sub.value, cst.Name) and sub.value.value == alias and self._inside(sub, fn.body)
                            and len(sub.slice) == 1 and isinstance(sub.slice[0].slice, cst.Index)):
                        new = key_of(sub.slice[0].slice.value, role)
                        if new is None:
                            return f"metric {self.code(sub.slice[0].slice.value)} has no facade key"
                        edits[sub.slice[0].slice.value] = self.key_node(sub.slice[0].slice.value, new)
                return None
            return None  # used as a whole (printed, logged): it holds the facade's keys now

        fields = {"epoch": "epoch", "iteration": "global_step", "output": "last_loss", "max_epochs": "max_epochs",
                  "metrics": "metrics"}
        for attr in self.attributes:
            if not self._inside(attr, fn.body) or not (isinstance(attr.value, cst.Attribute) and attr.value.attr.value == "state"
                                                  and isinstance(attr.value.value, cst.Name)):
                continue
            who = attr.value.value.value
            if who == param:
                role = "evaluator" if evaluator else "trainer"
            elif who == name:
                role = "trainer"
            elif who in ev_names:
                role = "evaluator"
            else:
                continue
            field = attr.attr.value
            if role == "evaluator" and field != "metrics":
                return f"{who}.state.{field} of the evaluator"
            if field not in fields:
                return f"{who}.state.{field} has no facade equivalent"
            if field == "metrics":
                why = metrics_keys(attr, role)
                if why:
                    return why
            edits[attr] = self.expr(f"{param}.{fields[field]}")
            covered.add(id(attr.value.value))
        for c in self.calls:
            if self._inside(c, fn.body) and self.method(c) == "run" and self.receiver(c) in ev_names:
                loader = self.code(c.args[0].value) if c.args else ""
                if "train" in loader.lower():
                    return f"it evaluates on {loader}: the facade computes metrics on the validation data only"
                if not self.is_statement(c):
                    return "the evaluator's result is used"
                edits[self.stmt_of(c)] = cst.RemoveFromParent()
                covered.add(id(c.func.value))
        for n in self.names:
            if not self._inside(n, fn.body) or id(n) in covered:
                continue
            if n.value in ev_names | {name}:
                return f"it uses {n.value} beyond its state"
            if n.value == param:
                return f"it uses {param} beyond its state"
        self.replace.update(edits)
        self.hooks.append((self.pos(at)[0], hook, guard, fn.name.value, True))
        self.handler_fns.add(fn)
        self.find(at, construct, "converted", "handler.callback",
                  f"{fn.name.value} is called by a generated unified.callbacks.Callback ({hook}); "
                  f"{param} is the facade's TrainState there (epoch, global_step, metrics with facade keys)")
        return None

    def _score(self, score: Optional[cst.BaseExpression], metric_map: dict[str, str]) -> tuple[Optional[str], str]:
        """(facade key, mode) from an Ignite score_function (a lambda or a def returning +-metrics[...])."""
        key, mode = self._score_key(score, metric_map)
        if key is not None and isinstance(score, cst.Name) and score.value in self.functions:
            fn = self.functions[score.value]
            uses = [n for n in self.names if n.value == score.value
                    and not (isinstance(self.parent(n), cst.Arg) and self.parent(n).keyword is n)]
            if len(uses) == 2 and self.func_of(fn) is None:
                self.remove(fn)  # its def and this use: the spec's monitor/mode replace it
        return key, mode

    def _score_key(self, score: Optional[cst.BaseExpression], metric_map: dict[str, str]) -> tuple[Optional[str], str]:
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
                if self._in_handler(attr):
                    continue  # inside an event handler (converted to a Callback hook, or manual)
                line = self.pos(attr)[0]
                ran = any(f is fn and ln < line for f, ln in self.val_runs)
                # after a converted evaluator.run(): its dict; else the last validation of the fit
                target = "val_metrics" if ran else f"{name}.result.metrics"
                self.replace[attr] = self.expr(target)
                parent = self.parent(attr)
                if isinstance(parent, cst.Subscript) and isinstance(parent.slice[0].slice, cst.Index):
                    key = self.value(parent.slice[0].slice.value)
                    new = metric_map.get(key) if isinstance(key, str) else None
                    new = new or (facade_key(key, "val") if isinstance(key, str) else None)
                    if new is None:
                        self.find(parent, f"{self.code(attr)}[{self.src(key)}]", "manual", "metrics.key", "no facade key")
                        continue
                    keys_read.append(new)
                    self.replace[parent.slice[0].slice.value] = self.key_node(parent.slice[0].slice.value, new)
                    self.find(parent, f"{self.code(attr)}[{self.src(key)}]", "converted", "metrics.key", f'{target}["{new}"]')
                else:
                    self.find(attr, self.code(attr), "converted", "metrics.dict",
                              f"{target}: keys are the facade's (val/loss, val/accuracy ...)")
                    self._rename_keys(attr, metric_map, keys_read)
            # trainer.state.epoch / iteration
            elif (isinstance(attr.value, cst.Attribute) and attr.value.attr.value == "state"
                  and isinstance(attr.value.value, cst.Name) and attr.value.value.value == name):
                if self._in_handler(attr):
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
                    self.find(sub, f"{alias}[{self.src(key)}]", "converted", "metrics.key", f'{alias}["{new}"]')
                else:
                    self.find(sub, f"{alias}[{self.src(key)}]", "manual", "metrics.key", "no facade key")
