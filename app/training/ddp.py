"""Data-parallel training (a train job's `devices: N`): N processes train each model together.

Rank 0 is the process that runs the job (the worker, or `python -m app.training.ddp_run
--job` under torchrun); it plans the run, finds the lr, predicts, scores and writes, as in a
one-process run. Ranks 1..N-1 are followers (app.training.ddp_run): rank 0 sends them the
training data once, then one command per fit (which rows, which seed, the resolved recipe,
the lr), and every rank builds the same learner and fits it under DistributedDataParallel.
Each rank trains on its shard of every epoch's shuffled order (rank 0 draws the order and
broadcasts it) with batch_size / N samples per step, so a step still averages the gradients
of batch_size samples and the model sees what a one-process run sees. Validation runs on
every rank over the whole valid split (identical metrics, hence identical early stopping
and best-epoch decisions); predictions and scores are rank 0's alone, so every sample is
scored exactly once. AUM margins are kept per rank on its shard and summed across ranks
(`reduce_aum`) before use. gloo on the CPU, NCCL on CUDA (docs/gpu.md).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from fastai.callback.core import Callback
from fastai.data.core import TfmdDL
from fastai.data.load import _FakeLoader
from fastai.torch_core import get_model, to_detach
from torch.nn.parallel import DistributedDataParallel

from app.config import child_environment

# How long rank 0 waits for every follower to join, polling that none died meanwhile.
JOIN_SECONDS = 300.0
# How long a rank waits in one collective: followers wait for rank 0's next command while it
# finds the lr, predicts and scores on its own.
COLLECTIVE_TIMEOUT = timedelta(hours=6)
CLOSED = "curate_closed"  # set in a group's store when rank 0 leaves it


def advertised_devices(setting: int) -> int:
    """What a worker offers (Settings.worker_devices): the setting when positive, else its CUDA GPUs (1 on the CPU)."""
    if setting > 0:
        return setting
    return max(1, torch.cuda.device_count())


def resolve_devices(requested: int | str, advertised: int) -> int:
    """How many processes a job trains with: `all` is what the worker advertises."""
    if requested == "all":
        return advertised
    if int(requested) > advertised:
        raise ValueError(f"the job asks for {requested} devices and this worker advertises {advertised} "
                         "(CURATE_WORKER_DEVICES)")
    return int(requested)


def group_device() -> torch.device:
    """Where rank 0 of a local group trains: CUDA when there is a GPU, else the CPU."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


class Group:
    """This process's place in a job's process group, and the command channel from rank 0."""

    def __init__(self, rank: int, world: int, device: torch.device, procs: list | None = None, store=None) -> None:
        self.rank, self.world, self.device = rank, world, device
        self.procs = procs or []  # rank 0's local followers: (Popen, its stderr file)
        self.store = store

    @property
    def comm_device(self) -> torch.device:
        # NCCL moves CUDA tensors only; gloo CPU ones.
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def send(self, message: dict[str, Any]) -> None:
        box = [message]
        dist.broadcast_object_list(box, src=0, device=self.comm_device)

    def recv(self) -> dict[str, Any]:
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0, device=self.comm_device)
        return box[0]

    def close(self, clean: bool) -> None:
        """Rank 0: tell the followers to stop (after a clean run), leave the group, reap local followers."""
        if clean and self.rank == 0 and dist.is_initialized():
            self.send({"op": "stop"})
        if self.rank == 0 and self.store is not None:
            self.store.set(CLOSED, "1")  # a looping follower that reconnects now waits for the next group
        if dist.is_initialized():
            if clean:
                dist.destroy_process_group()
            else:  # followers may be stuck in a collective: do not wait for them
                _abort_group()
        for proc, err in self.procs:
            try:
                proc.wait(timeout=30 if clean else 1)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            err.close()
        self.procs = []


def _abort_group() -> None:
    try:
        dist.destroy_process_group()
    except Exception:  # a group whose peers vanished may not shut down cleanly
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(addr: str, port: int, rank: int, world: int, device: torch.device, procs: list | None = None) -> Group:
    """Join (rank 0: host) the group at addr:port. Rank 0 waits for every follower to check in
    before the process group forms, and fails early, with the follower's error, when a local
    follower exits meanwhile."""
    store = dist.TCPStore(addr, port, world, rank == 0, timeout=COLLECTIVE_TIMEOUT, wait_for_workers=False)
    while rank > 0 and store.check([CLOSED]):  # the last job's group, on its way out
        del store
        time.sleep(1.0)
        store = dist.TCPStore(addr, port, world, False, timeout=COLLECTIVE_TIMEOUT)
    if rank == 0:
        deadline = time.monotonic() + JOIN_SECONDS
        while store.add("curate_joined", 0) < world - 1:
            for proc, err in procs or []:
                if proc.poll() is not None:
                    err.seek(0)
                    tail = err.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"a training process exited with status {proc.returncode} before "
                                       f"joining: {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {store.add('curate_joined', 0)} of {world - 1} training processes "
                                   f"joined {addr}:{port} in {JOIN_SECONDS:.0f}s")
            time.sleep(0.05)
    else:
        store.add("curate_joined", 1)
    dist.init_process_group(backend_for(device), store=store, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
    return Group(rank, world, device, procs, store)


def launch_local(world: int, device: torch.device, threads: int, address: str = "", local: int = 0) -> Group:
    """Rank 0 in this process, with followers for ranks 1..local-1 started here (`python -m
    app.training.ddp_run`); ranks local..world-1 join from other machines at `address`
    (host:port; default: a free port on 127.0.0.1, every rank local)."""
    if address:
        host, port = address.rsplit(":", 1)
        bind, port_n = host, int(port)
    else:
        bind, port_n = "127.0.0.1", free_port()
    local = world if local <= 0 else min(local, world)
    procs = []
    env = child_environment(CURATE_TORCH_THREADS=str(threads))
    try:
        for rank in range(1, local):
            err = tempfile.TemporaryFile()
            cmd = [sys.executable, "-m", "app.training.ddp_run", "--master", f"{bind}:{port_n}",
                   "--rank", str(rank), "--world-size", str(world), "--local-rank", str(rank)]
            procs.append((subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err), err))
        return join(bind, port_n, 0, world, device, procs)
    except BaseException:
        Group(0, world, device, procs).close(clean=False)
        raise


@contextmanager
def job_group(devices: int, data, settings) -> Iterator[Group | None]:
    """A train job's group (None for one device): see `process_group`."""
    if devices <= 1:
        yield None
        return
    with process_group(devices, data, settings) as group:
        yield group


@contextmanager
def process_group(world: int, data, settings) -> Iterator[Group]:
    """A group of `world` ranks for one job: started, sent the training data, and closed
    afterwards (followers told to stop after a clean run, stopped otherwise). A world of 1 is
    rank 0 alone, still under DistributedDataParallel (bench/gpu.py's one-rank check)."""
    device = group_device()
    group = launch_local(world, device, torch.get_num_threads(), settings.ddp_address, settings.ddp_local_devices)
    clean = False
    try:
        group.send({"op": "start", "data": data, "threads": torch.get_num_threads()})
        yield group
        clean = True
    finally:
        group.close(clean)


def announce_fit(group: Group, learn, recipe, lr: float, pretrained: bool, has_valid: bool, aum: bool) -> None:
    """Rank 0: have every follower build and fit the learner `learn` is (its rows and seed)."""
    group.send(fit_command(learn.ddp_rows, learn.ddp_seed, recipe.model_dump(), lr, pretrained, has_valid, aum))


def fit_command(rows: np.ndarray, seed: int, recipe: dict[str, Any], lr: float, pretrained: bool,
                has_valid: bool, aum: bool) -> dict[str, Any]:
    """What rank 0 sends before each fit; the followers build and fit the same learner."""
    return {"op": "fit", "rows": np.asarray(rows), "seed": int(seed), "recipe": recipe, "lr": float(lr),
            "pretrained": bool(pretrained), "has_valid": bool(has_valid), "aum": bool(aum)}


class ShardedDL(TfmdDL):
    """The train loader's shard for one rank: rank 0's shuffled order, broadcast, cut into
    `world` equal consecutive parts (the last n mod world samples of the order wait for the next
    epoch, as drop_last leaves a partial batch), so that no sample repeats within an epoch.

    The shape of fastai's DistributedDL (fastai.distributed), which cannot be used here: its
    module needs Hugging Face accelerate, it broadcasts the order through CUDA (not gloo), and
    it pads the order with repeated samples."""

    def __init__(self, dl, rank: int, world: int, comm_device: torch.device) -> None:
        # No TfmdDL.__init__: the wrapped loader does the loading; this one only picks its indices.
        self.dl, self.rank, self.world_size, self.comm_device = dl, rank, world, comm_device
        self.bs, self.drop_last, self.dataset, self.num_workers, self.offs, self.pin_memory = (
            dl.bs, dl.drop_last, dl.dataset, dl.num_workers, dl.offs, dl.pin_memory)
        self.device = dl.device
        fake = dl.fake_l
        self.fake_l = _FakeLoader(self, fake.pin_memory, fake.num_workers, fake.timeout,
                                  persistent_workers=fake.persistent_workers, pin_memory_device=fake.pin_memory_device)

    def get_idxs(self):
        idxs = torch.as_tensor(np.asarray(list(self.dl.get_idxs()), dtype=np.int64), device=self.comm_device)
        dist.broadcast(idxs, 0)
        per = len(idxs) // self.world_size
        self.n = per
        return idxs[self.rank * per:(self.rank + 1) * per].tolist()

    def __len__(self) -> int:
        per, bs = self.dl.n // self.world_size, self.dl.bs
        return per // bs + (0 if self.drop_last or per % bs == 0 else 1)

    def before_iter(self) -> None:
        self.dl.before_iter()

    def randomize(self) -> None:
        self.dl.randomize()

    def after_batch(self, b):
        return self.dl.after_batch(b)

    def after_iter(self) -> None:
        self.dl.after_iter()

    def create_batches(self, samps):
        return self.dl.create_batches(samps)

    def to_detach(self, b, cpu=True, gather=True):
        return to_detach(b, cpu, False)


class DDPCallback(Callback):
    """Wraps the model in DistributedDataParallel and the train loader in this rank's ShardedDL
    for each fit (fine_tune's frozen and unfrozen fits each get their own wrapper, with the
    parameters that train then)."""

    order = 11  # after TrainEvalCallback, before the recorder and AUMCallback

    def __init__(self, group: Group) -> None:
        self.group = group
        self.wrapped = None

    def before_fit(self) -> None:
        self.unwrap()
        learn, group = self.learn, self.group
        device_ids = [group.device.index or 0] if group.device.type == "cuda" else None
        train = learn.dls.loaders[0]
        self.wrapped = (learn.model, train, train.bs)
        train.bs = max(1, train.bs // group.world)
        learn.dls.loaders[0] = ShardedDL(train, group.rank, group.world, group.comm_device)
        learn.model = DistributedDataParallel(learn.model, device_ids=device_ids)

    def before_validate(self) -> None:
        # Each rank's last training batch moved its own batchnorm statistics (DDP copies rank
        # 0's only at the start of a training forward): validate with rank 0's on every rank,
        # so every rank computes the same metrics and makes the same early-stopping decisions.
        for buffer in get_model(self.learn.model).buffers():
            dist.broadcast(buffer, 0)

    def after_fit(self) -> None:
        self.unwrap()

    def unwrap(self) -> None:
        """Back to the plain model and loader (also after a fit that raised)."""
        if self.wrapped is None:
            return
        model, train, bs = self.wrapped
        self.learn.model = model
        train.bs = bs
        self.learn.dls.loaders[0] = train
        self.wrapped = None


@contextmanager
def data_parallel(learn, group: Group) -> Iterator[None]:
    """A fit of `learn` on every rank of the group; learners.fit retries a non-finite fit from
    the plain model, so the wrappers come off even when the fit raises."""
    cb = DDPCallback(group)
    try:
        with learn.added_cbs([cb]):
            yield
    finally:
        cb.learn = learn
        cb.unwrap()


def reduce_aum(aum_cb, group: Group) -> None:
    """Sum each train row's margins and counts over the ranks (each rank saw its shard)."""
    n = aum_cb.n
    for name, dtype in (("sums", torch.float64), ("counts", torch.int64)):
        local = getattr(aum_cb, name)
        t = torch.zeros(n, dtype=dtype) if local is None else local
        home = t.device
        t = t.to(group.comm_device)
        dist.all_reduce(t)
        setattr(aum_cb, name, t.to(home))
    m = torch.zeros((), dtype=torch.int64) if aum_cb._mismatched is None else aum_cb._mismatched
    m = m.to(group.comm_device)
    dist.all_reduce(m)
    aum_cb._mismatched = m
