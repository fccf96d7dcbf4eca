"""Area under the margin (AUM): how hard a model fights a sample's label while it trains on it.

For every training batch, the raw outputs the model already computed for the loss give each
sample's margin logit[y] - max_{k != y} logit[k]; the AUM of a sample is the mean of its
margins over the epochs it was seen. A mislabelled sample is pulled towards its true class by
every similar sample and towards its given label only by its own gradient, so its margin
stays low or negative long after the clean samples' margins have grown.

No extra forward pass: the callback reads `learn.pred` after each training batch. fastai's
DataLoader draws each epoch's index order once, in the main process, when iteration starts
(`get_idxs`), and cuts it into consecutive batches of `bs` (the last one dropped with
drop_last), so batch `iter` holds the dataset rows order[iter * bs : (iter + 1) * bs]. The
callback stands in for the train loader's `get_idxs` during each epoch to keep that order
(as a list: text's SortedDL returns a one-shot iterator). When the dataset's targets are
given, every batch is checked against them and a batch that does not match is left out, so a
loader that orders its batches differently can cost margins but never misattribute them.
Loaders whose dataset repeats rows (oversampling) say which train row each dataset row is in
`dls.train_rows`; margins are then kept per train row, a repeated row contributing each copy's.
"""

from __future__ import annotations

import numpy as np
import torch
from fastai.learner import Recorder

from app.training.callbacks import LeanCallback, in_lr_find


class _RecordedOrder:
    """Stands in for a loader's get_idxs for one epoch and keeps the order it returned."""

    def __init__(self, get_idxs) -> None:
        self.get_idxs = get_idxs
        self.order = None

    def __call__(self):
        idxs = self.get_idxs()
        if not isinstance(idxs, (list, np.ndarray)):
            idxs = list(idxs)
        self.order = idxs
        return idxs


class AUMCallback(LeanCallback):
    """Sums each train sample's margins over the training batches of every fit it is added to.

    `targets`: the class index of every train row (of `dls.train_rows`' rows when the loaders
    have it, else of the train dataset), to check each batch against.
    """

    # After the callbacks that reshape predictions (RNNCallback keeps only the classifier output).
    order = Recorder.order + 3
    run_valid = False

    def __init__(self, targets: np.ndarray | None = None) -> None:
        self.targets = None if targets is None else np.asarray(targets, dtype=np.int64)
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.epochs = 0
        self.batches = 0
        self._skipped = 0
        self._mismatched: torch.Tensor | None = None

    def before_fit(self) -> None:
        self.run = not in_lr_find(self)
        rows = getattr(self.learn.dls, "train_rows", None)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows is not None:
            self.n = len(self.targets) if self.targets is not None else int(self.rows.max(initial=-1)) + 1
        else:
            self.n = len(self.learn.dls.train.dataset)
        if self.targets is not None and len(self.targets) != self.n:
            raise ValueError(f"{len(self.targets)} targets for {self.n} train rows")
        if self.sums is not None and self.sums.numel() != self.n:
            raise ValueError(f"AUMCallback saw {self.sums.numel()} train samples, then {self.n}: use one per learner")

    def before_train(self) -> None:
        self.order_t = None
        self._recorded = None
        dl = self.learn.dl
        self._patched_dl, self._own_get_idxs = dl, dl.__dict__.get("get_idxs")
        self._recorded = _RecordedOrder(dl.get_idxs)
        dl.get_idxs = self._recorded

    def _restore(self) -> None:
        dl = getattr(self, "_patched_dl", None)
        if dl is None:
            return
        if self._own_get_idxs is None:
            dl.__dict__.pop("get_idxs", None)
        else:
            dl.get_idxs = self._own_get_idxs
        self._patched_dl = None

    def _allocate(self, device: torch.device) -> None:
        # On the model's device, so that recording a batch never waits for the GPU.
        self.sums = torch.zeros(self.n, dtype=torch.float64, device=device)
        self.counts = torch.zeros(self.n, dtype=torch.int64, device=device)
        self._targets_t = None if self.targets is None else torch.as_tensor(self.targets, device=device)
        self._mismatched = torch.zeros((), dtype=torch.int64, device=device)
        self._rows_t = None if self.rows is None else torch.as_tensor(self.rows, device=device)

    def after_pred(self) -> None:
        dl = self.learn.dl
        pred = self.learn.pred
        if isinstance(pred, (tuple, list)):
            pred = pred[0]
        logits = pred.detach().float()
        if self.sums is None:
            self._allocate(logits.device)
        if self.order_t is None:
            # The index order this epoch's iterator drew when iteration started.
            order = None if self._recorded is None else self._recorded.order
            if order is None:
                self._skipped += 1
                return
            self.order_t = torch.as_tensor(np.asarray(order, dtype=np.int64), device=self.sums.device)
            if self._rows_t is not None:
                self.order_t = self._rows_t[self.order_t]  # dataset rows -> train rows
        y = self.learn.yb[0].detach().reshape(-1).long().to(self.sums.device)
        bs = dl.bs
        idx = self.order_t[self.learn.iter * bs : (self.learn.iter + 1) * bs]
        if logits.ndim != 2 or len(idx) != len(y) or len(y) != logits.shape[0]:
            self._skipped += 1
            return
        m = margins(logits.to(self.sums.device), y).to(self.sums.dtype)
        ones = torch.ones_like(idx)
        if self._targets_t is not None:
            # 1 when every target of the batch is the target of the row it maps to, else 0;
            # kept on the device (a Python bool here would wait for the GPU every batch).
            ok = (self._targets_t[idx] == y).all().long()
            m, ones = m * ok, ones * ok
            self._mismatched += 1 - ok
        self.sums.index_add_(0, idx, m)
        self.counts.index_add_(0, idx, ones)
        self.batches += 1

    def after_train(self) -> None:
        self._restore()
        self.epochs += 1

    def after_fit(self) -> None:
        # after_train does not run when fit is cancelled mid-epoch.
        self._restore()

    def reset_for_retry(self) -> None:
        """Forget the margins of a fit that failed (app.training.nan_guard retries it)."""
        self._restore()
        self.sums = self.counts = self._mismatched = None
        self.epochs = self.batches = self._skipped = 0

    @property
    def skipped_batches(self) -> int:
        """Training batches whose margins were left out: no index order, or targets that do not match."""
        return self._skipped + (0 if self._mismatched is None else int(self._mismatched))

    def aum(self) -> np.ndarray:
        """Mean margin per train dataset row over the epochs it was seen; NaN if never seen."""
        if self.sums is None:
            return np.full(getattr(self, "n", 0), np.nan)
        sums, counts = self.sums.cpu().numpy(), self.counts.cpu().numpy()
        out = np.full(len(sums), np.nan)
        seen = counts > 0
        out[seen] = sums[seen] / counts[seen]
        return out

    def seen(self) -> np.ndarray:
        """How many margins each train dataset row contributed."""
        if self.counts is None:
            return np.zeros(getattr(self, "n", 0), dtype=np.int64)
        return self.counts.cpu().numpy()


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """logit[y] - max over the other classes of logit[k], per row."""
    given = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return given - others.max(dim=1).values
