"""A follower rank of a data-parallel train job (app.training.ddp): `python -m app.training.ddp_run`.

The worker starts one per extra local device for a job with `devices: N`; on other machines
torchrun (or a plain shell) starts them, pointed at the worker's rendezvous address
(docs/gpu.md). A follower joins rank 0's group, receives the training data, then fits each
model rank 0 announces, in step with it, until rank 0 says stop. With `--loop` it then waits
for the next job's group at the same address.

Ranks and sizes come from the arguments, else from torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `--first-rank` offsets LOCAL_RANK for a machine whose
torchrun starts ranks first-rank.. of a larger group.
"""

from __future__ import annotations

import argparse
import logging
import tempfile

from app.config import forget_rank_environment, torchrun_environment

log = logging.getLogger("curate.ddp")


def follow(group) -> int:
    """Fit every model rank 0 announces; returns how many."""
    from fastai.torch_core import set_seed

    from app.training.adapters import adapter_for
    from app.training.aum import AUMCallback
    from app.training.ddp import data_parallel, reduce_aum
    from app.training.environment import configure_threads, resolve_environment
    from app.training.fold_parallel import follow_folds
    from app.training.learners import build_learner, fit
    from app.training.recipe import Recipe

    start = group.recv()
    if start.get("op") != "start":
        raise RuntimeError(f"expected the run's start from rank 0, got {start.get('op')!r}")
    data = start["data"]
    configure_threads(int(start.get("threads", 0)))
    fits = 0
    with tempfile.TemporaryDirectory(prefix="curate-ddp-") as workdir:
        while True:
            cmd = group.recv()
            if cmd["op"] == "stop":
                return fits
            if cmd["op"] == "folds":  # out-of-fold models one per rank (app.training.fold_parallel)
                fits += follow_folds(group, data, cmd, workdir)
                continue
            if cmd["op"] != "fit":
                raise RuntimeError(f"unknown command {cmd['op']!r} from rank 0")
            recipe = Recipe.model_validate(cmd["recipe"])
            env = resolve_environment(recipe)
            adapter = adapter_for(data.task, recipe, env, data.classes, data.cat_names, data.cont_names, data.multilabel)
            train = data.train.loc[cmd["rows"]]
            set_seed(cmd["seed"], reproducible=env.device.type == "cpu")
            dls = adapter.dataloaders(train, data.valid)
            try:
                learn = build_learner(adapter, dls, cmd["pretrained"], [], workdir)
            except Exception:
                if not cmd["pretrained"]:
                    raise
                # The same architecture without the download: DDP copies rank 0's weights anyway.
                learn = build_learner(adapter, dls, False, [], workdir)
            aum = AUMCallback(targets=train["y"].to_numpy()) if cmd["aum"] else None
            with learn.added_cbs([aum] if aum is not None else []):
                fit(learn, recipe, cmd["lr"], cmd["pretrained"], has_valid=cmd["has_valid"],
                    wrap=lambda learn: data_parallel(learn, group))
            if aum is not None:
                reduce_aum(aum, group)
            fits += 1
            del learn, dls


def _args(argv: list[str] | None) -> argparse.Namespace:
    env = torchrun_environment()
    p = argparse.ArgumentParser(prog="python -m app.training.ddp_run", description=__doc__.split("\n\n")[0])
    default_master = f"{env['MASTER_ADDR']}:{env['MASTER_PORT']}" if "MASTER_ADDR" in env and "MASTER_PORT" in env else None
    p.add_argument("--master", default=default_master, help="rank 0's rendezvous address, host:port")
    p.add_argument("--rank", type=int, default=None, help="this process's rank (default: first-rank + LOCAL_RANK, or RANK)")
    p.add_argument("--first-rank", type=int, default=None, help="the rank of this machine's LOCAL_RANK 0")
    p.add_argument("--local-rank", type=int, default=int(env.get("LOCAL_RANK", 0)), help="which local GPU")
    p.add_argument("--world-size", type=int, default=int(env["WORLD_SIZE"]) if "WORLD_SIZE" in env else None)
    p.add_argument("--loop", action="store_true", help="after a job, wait for the next one")
    args = p.parse_args(argv)
    if args.rank is None:
        args.rank = args.first_rank + args.local_rank if args.first_rank is not None else int(env.get("RANK", -1))
    if args.master is None or args.world_size is None or not 1 <= args.rank < args.world_size:
        p.error("needs --master host:port, --world-size and a rank from 1 to world-size - 1 (rank 0 runs the job)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    # fastai reads these to decide whether to gather predictions across ranks; this module's
    # group does that itself (rank 0 predicts alone).
    forget_rank_environment()
    logging.basicConfig(level=logging.INFO, format=f"rank {args.rank}: %(message)s")
    import torch

    from app.training.ddp import join

    device = torch.device("cpu")
    if torch.cuda.is_available():
        torch.cuda.set_device(args.local_rank)
        device = torch.device("cuda", args.local_rank)
    host, port = args.master.rsplit(":", 1)
    while True:
        group = join(host, int(port), args.rank, args.world_size, device)
        clean = False
        try:
            fits = follow(group)
            clean = True
            log.info("fitted %d models with rank 0", fits)
        finally:
            group.close(clean)
        if not args.loop:
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
