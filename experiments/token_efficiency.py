"""Stage `token_efficiency`: MuonClip against AdamW, each at the best lr of a small sweep (Moonlight Fig. 1a).

Reports the tokens MuonClip needs to reach AdamW's final validation loss, as a fraction of AdamW's tokens, two ways:
`token_ratio` reads it off the best MuonClip run's validation curve (a point inside its schedule, before its lr
decay: conservative), `token_ratio_budget` from MuonClip runs retrained on shorter budgets, each fully decayed.
"""

from __future__ import annotations

from experiments.analysis import best_run, final_val_loss, token_ratio, tokens_to_reach
from experiments.config import TokenEfficiencyConfig, load_params
from experiments.context import RESULTS, Setup, load_setup, log_run, write_metrics
from experiments.figures import token_efficiency_figure, write_csv
from experiments.runner import RunResult, train

STAGE = "token_efficiency"


def sweep(cfg: TokenEfficiencyConfig, setup: Setup) -> dict[str, list[RunResult]]:
    """Every lr of both sweeps, same seed (same init and batches) for all runs."""
    lrs = {"muonclip": cfg.muonclip_lrs, "adamw": cfg.adamw_lrs}
    return {name: [train(setup.model, setup.train, setup.val, cfg.run(name, lr)) for lr in values]
            for name, values in lrs.items()}


def budget_runs(cfg: TokenEfficiencyConfig, setup: Setup, best: RunResult) -> list[RunResult]:
    """The best MuonClip run retrained at every budget fraction, plus `best` itself (the full budget), by tokens."""
    shorter = [train(setup.model, setup.train, setup.val, cfg.budget_run(best.config.lr, fraction))
               for fraction in sorted(cfg.budget_fractions)]
    return [*shorter, best]


def summarise(sweeps: dict[str, list[RunResult]], budgets: list[RunResult]) -> dict[str, float | int | None]:
    """Best lr and final loss per optimizer, both token ratios, and every sweep point's final loss."""
    best = {name: best_run(runs) for name, runs in sweeps.items()}
    muon, adamw = best["muonclip"], best["adamw"]
    needed = tokens_to_reach(muon.eval_tokens, muon.val_loss, final_val_loss(adamw))
    budget_needed = tokens_to_reach([run.eval_tokens[-1] for run in budgets], [final_val_loss(run) for run in budgets],
                                    final_val_loss(adamw))
    metrics: dict[str, float | int | None] = {
        "muonclip_best_lr": muon.config.lr,
        "adamw_best_lr": adamw.config.lr,
        "muonclip_val_loss_final": final_val_loss(muon),
        "adamw_val_loss_final": final_val_loss(adamw),
        "adamw_tokens": adamw.eval_tokens[-1],
        "muonclip_tokens_to_adamw_final": needed,
        "token_ratio": token_ratio(muon, adamw),
        "muonclip_budget_tokens_to_adamw_final": budget_needed,
        "token_ratio_budget": None if budget_needed is None else budget_needed / adamw.eval_tokens[-1],
        "muonclip_max_logit_peak": max(muon.max_logit),
        "muonclip_clipped_fraction_mean": sum(muon.clipped_fraction) / len(muon.clipped_fraction),
    }
    for name, runs in sweeps.items():
        for run in runs:
            metrics[f"{name}_lr{run.config.lr:g}_val_loss_final"] = final_val_loss(run)
    return metrics


def main() -> None:
    params = load_params()
    cfg = TokenEfficiencyConfig(**params[STAGE])
    setup = load_setup(cfg.seq_len, params)
    sweeps = sweep(cfg, setup)
    best = {name: best_run(runs) for name, runs in sweeps.items()}
    budgets = budget_runs(cfg, setup, best["muonclip"])
    metrics = summarise(sweeps, budgets)
    out = RESULTS / STAGE
    muon, adamw = best["muonclip"], best["adamw"]
    csv_path = write_csv(out / "val_loss.csv", {
        "step": muon.eval_steps, "tokens": muon.eval_tokens,
        "muonclip_val_loss": muon.val_loss, "adamw_val_loss": adamw.val_loss,
    })
    budget_path = write_csv(out / "budgets.csv", {
        "step": [run.eval_steps[-1] for run in budgets], "tokens": [run.eval_tokens[-1] for run in budgets],
        "muonclip_val_loss": [final_val_loss(run) for run in budgets],
    })
    png = token_efficiency_figure(sweeps, best, budgets, final_val_loss(adamw), out / "token_efficiency.png")
    metrics_path = write_metrics(STAGE, metrics)
    history = {step: {"muonclip_val_loss": m, "adamw_val_loss": a}
               for step, m, a in zip(muon.eval_steps, muon.val_loss, adamw.val_loss)}
    log_run(STAGE, cfg.model_dump(), metrics, history, [metrics_path, csv_path, budget_path, png])
    print(metrics)


if __name__ == "__main__":
    main()
