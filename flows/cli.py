"""`k2` command line: one subcommand per job (litgpt style).

    k2 run                     whole pipeline (DVC decides what is stale), then a checkpoint table
    k2 stage NAME              one stage as a Prefect flow (what dvc.yaml's commands call)
    k2 export-hf CKPT DIR      a checkpoint folder -> a transformers-loadable folder
    k2 plan CONFIG             parameter counts of a preset (tiny, small, kimi-k2) or config.json
    k2 serve [PATH]            OpenAI-compatible server (/v1/chat/completions) for a checkpoint or model
    k2 eval --model M --tasks  benchmarks (MMLU, math) on a checkpoint, model file/folder or endpoint
    k2 ui                      Prefect and MLflow UIs over this project's runs
    k2 deploy                  work pool + prefect.yaml's deployments (nightly, on-demand) on PREFECT_API_URL
    k2 worker [--run-once]     a Prefect process worker that executes the deployments' runs
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from pathlib import Path

from flows import layout


def _stage(args: argparse.Namespace) -> int:
    if args.name not in layout.STAGES:
        print(f"k2 stage: unknown stage {args.name!r}; stages: {', '.join(layout.STAGES)}", file=sys.stderr)
        return 2
    from flows.servers import prefect_server
    from flows.supervise import die_with_parent
    from k2core.config import load_params

    # A stage dies with whatever started it (`k2 run` through DVC, a launcher, a worker): SIGTERM then unwinds it,
    # stopping its own server and children, instead of training on as an orphan.
    die_with_parent()
    params = load_params(Path.cwd() / "params.yaml")
    for section in layout.STAGE_SECTIONS[args.name]:
        params.section(section)  # a bad params.yaml fails here, before any server starts
    # Under `k2 run`, a worker or the tests, PREFECT_API_URL names a server; a stage run on its own (`dvc repro`
    # typed by a user) gets one that dies with it, instead of Prefect's ephemeral server, which would outlive a
    # killed stage. Prefect reads its API URL when first imported: import the flow only once the server is up.
    with prefect_server(Path.cwd()):
        from flows.subflows import run_stage_flow

        module = importlib.import_module(f"flows.{args.name}")
        run_stage_flow(getattr(module, f"{args.name}_flow"))
    return 0


def _run(args: argparse.Namespace) -> int:
    from flows.run_lock import run_lock
    from flows.servers import prefect_server

    root = Path(args.root).resolve()
    os.chdir(root)
    with run_lock(root), prefect_server(root):
        # Prefect reads its API URL when first imported: import the flow only once the server is up.
        from flows.pipeline import pipeline

        pipeline(root=str(root), force=args.force)
    print("\n" + ui_commands(root))
    return 0


def ui_commands(root: Path) -> str:
    """The exact commands that open this run's UIs, for the closing lines of `k2 run`."""
    from flows.interpreter import scripts_dir
    from k2core.tracking.mlflow_tracker import tracking_uri

    def shown(path: Path) -> str:
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    k2, python = shown(scripts_dir() / "k2"), shown(Path(sys.executable))
    return "\n".join([
        "Open the UIs (both on 127.0.0.1; Ctrl-C stops them):",
        f"  {k2} ui",
        "  Prefect UI http://127.0.0.1:4200: flow run 'pipeline' and the stage flow runs;",
        "  MLflow UI http://127.0.0.1:5000: experiment 'k2', one child run per stage (tick runs, press Compare),",
        "  registered models k2-pretrain, k2-sft, k2-rl. Either alone:",
        f"  PREFECT_HOME={shown(root / '.prefect')} {python} -m prefect server start --host 127.0.0.1 --port 4200",
        f"  {python} -m mlflow ui --backend-store-uri {tracking_uri(root)} --host 127.0.0.1 --port 5000",
    ])


def _export_hf(args: argparse.Namespace) -> int:
    from k2core.model import K2ForCausalLM
    from k2core.storage import write_manifest

    source = Path(args.checkpoint)
    if not (source / "config.json").exists():
        print(f"k2 export-hf: {source} has no config.json; pass a published checkpoint such as checkpoints/sft",
              file=sys.stderr)
        return 2
    model = K2ForCausalLM.from_pretrained(source)
    model.save_pretrained(args.dir)
    tokenizer_files = [p for p in source.iterdir() if p.name.startswith(("tokenizer", "special_tokens"))]
    for file in tokenizer_files:
        (Path(args.dir) / file.name).write_bytes(file.read_bytes())
    write_manifest(args.dir)  # last: k2's loaders verify the export; transformers ignores the file
    print(f"wrote {args.dir}: load it with transformers.AutoModelForCausalLM.from_pretrained({args.dir!r})")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from k2core.model import K2Config
    from k2core.model.plan import format_plan

    source = Path(args.config)
    config = K2Config.model_validate_json(source.read_text()) if source.suffix == ".json" else K2Config.preset(args.config)
    print(format_plan(config))
    return 0


def _ui(args: argparse.Namespace) -> int:
    import time

    from flows.servers import mlflow_server, prefect_server

    root = Path(args.root).resolve()
    os.environ.pop("PREFECT_API_URL", None)
    with prefect_server(root, ui=True) as api, mlflow_server(root) as mlflow_url:
        print(f"Prefect UI: {api.removesuffix('/api')}\nMLflow UI:  {mlflow_url}\nCtrl-C stops both.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="k2", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole pipeline")
    run.add_argument("--root", default=".")
    run.add_argument("--force", action="store_true", help="rerun every stage even if DVC finds it up to date")
    run.set_defaults(handler=_run)
    stage = sub.add_parser("stage", help="run one stage")
    stage.add_argument("name")
    stage.set_defaults(handler=_stage)
    export = sub.add_parser("export-hf", help="export a checkpoint for transformers")
    export.add_argument("checkpoint")
    export.add_argument("dir")
    export.set_defaults(handler=_export_hf)
    plan = sub.add_parser("plan", help="count parameters of a model config without building it")
    plan.add_argument("config")
    plan.set_defaults(handler=_plan)
    from flows import serve as serve_module

    serve = sub.add_parser("serve", help="OpenAI-compatible server for a checkpoint or model",
                           description=serve_module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve_module.add_arguments(serve)
    serve.set_defaults(handler=serve_module.serve_command)
    from flows import eval_cli

    eval_cli.add_arguments(sub)
    from flows import deploy as deploy_module

    deploy_module.add_arguments(sub)
    ui = sub.add_parser("ui", help="start the Prefect and MLflow UIs")
    ui.add_argument("--root", default=".")
    ui.set_defaults(handler=_ui)
    return parser


def _terminate(signum: int, _frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so every server and child this command started is stopped on the way out."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.interpreter import put_interpreter_on_path
    from k2core.errors import UserError, hide_user_error_tracebacks, one_line

    put_interpreter_on_path()
    hide_user_error_tracebacks()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.handler(args)
    except UserError as exc:  # bad input: one line naming it, no traceback
        print(f"k2: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
