"""Stage `logit_explosion`: vanilla Muon vs MuonClip at one aggressive lr (K2 §2.1, Fig. 2; App. D tau = 30).

Both arms start from the same weights and see the same batches; MuonClip additionally runs `apply_qk_clip` after
every optimizer step.
"""

from __future__ import annotations

from k2core.model import K2Config
from k2core.train.data import TokenBlocks

from experiments.analysis import final_val_loss
from experiments.config import LogitExplosionConfig, load_params
from experiments.context import RESULTS, load_setup, log_run, write_metrics
from experiments.figures import logit_explosion_figure, write_csv
from experiments.runner import RunResult, train

STAGE = "logit_explosion"
ARMS = ("muon", "muonclip")


def run_arms(cfg: LogitExplosionConfig, model_cfg: K2Config, train_blocks: TokenBlocks, val: TokenBlocks
             ) -> dict[str, RunResult]:
    """Both arms at cfg.lr."""
    return {arm: train(model_cfg, train_blocks, val, cfg.run(arm, cfg.lr)) for arm in ARMS}


def summarise(runs: dict[str, RunResult], tau: float) -> dict[str, float | int | bool]:
    """Peak and final max logit, clip activity and losses of both arms."""
    metrics: dict[str, float | int | bool] = {"tau": tau}
    for arm, run in runs.items():
        tail = run.loss[-20:]
        metrics |= {
            f"{arm}_max_logit_peak": max(run.max_logit),
            f"{arm}_max_logit_final": run.max_logit[-1],
            f"{arm}_steps_above_tau": sum(x > tau for x in run.max_logit),
            f"{arm}_train_loss_last20": sum(tail) / len(tail),
            f"{arm}_val_loss_final": final_val_loss(run),
            f"{arm}_diverged": run.diverged,
        }
    clip = runs["muonclip"]
    metrics["muonclip_clipped_fraction_mean"] = sum(clip.clipped_fraction) / len(clip.clipped_fraction)
    metrics["muonclip_steps_with_clip"] = sum(x > 0 for x in clip.clipped_fraction)
    return metrics


def main() -> None:
    params = load_params()
    cfg = LogitExplosionConfig(**params[STAGE])
    setup = load_setup(cfg.seq_len, params)
    runs = run_arms(cfg, setup.model, setup.train, setup.val)
    metrics = summarise(runs, cfg.tau)
    out = RESULTS / STAGE
    muon, clip = runs["muon"], runs["muonclip"]
    steps = min(len(muon.max_logit), len(clip.max_logit))
    csv_path = write_csv(out / "curves.csv", {
        "step": clip.steps[:steps],
        "muon_max_logit": muon.max_logit[:steps], "muonclip_max_logit": clip.max_logit[:steps],
        "muon_loss": muon.loss[:steps], "muonclip_loss": clip.loss[:steps],
        "muonclip_clipped_fraction": clip.clipped_fraction[:steps],
    })
    png = logit_explosion_figure(runs, cfg.tau, out / "logit_explosion.png")
    metrics_path = write_metrics(STAGE, metrics)
    history = {step: {f"{arm}_{name}": getattr(run, name)[step] for arm, run in runs.items()
                      for name in ("loss", "max_logit")} for step in range(steps)}
    log_run(STAGE, {**cfg.model_dump(), "hidden_size": setup.model.hidden_size,
                    "num_hidden_layers": setup.model.num_hidden_layers}, metrics, history,
            [metrics_path, csv_path, png])
    print(metrics)


if __name__ == "__main__":
    main()
