"""Answers to lab 1: a train-only feature scaler, a next-token window dataset."""

from __future__ import annotations

import numpy as np
import torch

from tests.checker_cases import Cases, Wrong

# ---------------------------------------------------------------- lab01.scaler: right


class ScalerReference:
    def fit(self, x):
        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.std_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.std_


class ScalerLoops:
    """Per-column loops with Python floats and math; a list-free but element-wise computation."""

    def fit(self, x):
        n, d = x.shape
        self.mean_, self.std_ = [], []
        for j in range(d):
            column = [float(x[i, j]) for i in range(n)]
            mean = sum(column) / n
            std = (sum((v - mean) ** 2 for v in column) / n) ** 0.5
            self.mean_.append(mean)
            self.std_.append(std if std > 0 else 1.0)
        return self

    def transform(self, x):
        out = np.empty(x.shape)
        for j, (mean, std) in enumerate(zip(self.mean_, self.std_, strict=True)):
            out[:, j] = (x[:, j] - mean) / std
        return out


class ScalerFloat32Torch:
    """Statistics in float64, result as a float32 torch tensor: accepted at float32 precision."""

    def fit(self, x):
        t = torch.as_tensor(x, dtype=torch.float64)
        self.mean_ = t.mean(dim=0)
        std = t.std(dim=0, unbiased=False)
        self.std_ = torch.where(std > 0, std, torch.ones_like(std))
        return self

    def transform(self, x):
        return ((torch.as_tensor(x, dtype=torch.float64) - self.mean_) / self.std_).float()


class ScalerFloat32Numpy:
    """Everything in float32 (statistics and result), as numpy does for a float32 array."""

    def fit(self, x):
        x = np.asarray(x, dtype=np.float32)
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.std_ = np.where(std > 0, std, np.float32(1.0))
        return self

    def transform(self, x):
        return (np.asarray(x, dtype=np.float32) - self.mean_) / self.std_


class ScalerFloat32Torch32:
    """Everything in float32 torch, the default dtype of torch.as_tensor on float data made by torch."""

    def fit(self, x):
        t = torch.as_tensor(x, dtype=torch.float32)
        self.mean_ = t.mean(dim=0)
        std = t.std(dim=0, correction=0)
        self.std_ = torch.where(std > 0, std, torch.ones_like(std))
        return self

    def transform(self, x):
        return (torch.as_tensor(x, dtype=torch.float32) - self.mean_) / self.std_


# ---------------------------------------------------------------- lab01.scaler: wrong


class ScalerTestStatistics(ScalerReference):
    def transform(self, x):
        return ScalerReference().fit(x).transform(x)


class ScalerSampleStd(ScalerReference):
    def fit(self, x):
        super().fit(x)
        std = x.std(axis=0, ddof=1)
        self.std_ = np.where(std > 0, std, 1.0)
        return self


class ScalerFloat32TorchStd(ScalerFloat32Torch32):
    """float32 torch with torch.std's default, the sample std (ddof=1): the float32 result hides no mistake."""

    def fit(self, x):
        super().fit(x)
        std = torch.as_tensor(x, dtype=torch.float32).std(dim=0)
        self.std_ = torch.where(std > 0, std, torch.ones_like(std))
        return self


class ScalerCachedTrainingOutput(ScalerReference):
    """fit caches the standardised training split, made with pandas' default sample std (ddof=1), and
    transform returns that cache when given the training array again: the result depends on the split."""

    def fit(self, x):
        super().fit(x)
        self.fitted_on_ = x
        std = x.std(axis=0, ddof=1)
        self.cache_ = (x - self.mean_) / np.where(std > 0, std, 1.0)
        return self

    def transform(self, x):
        if x is self.fitted_on_:
            return self.cache_.copy()
        return super().transform(x)


class ScalerGlobalStatistics(ScalerReference):
    def fit(self, x):
        self.mean_, self.std_ = x.mean(), x.std()
        return self


class ScalerNotScaled(ScalerReference):
    def transform(self, x):
        return x - self.mean_


class ScalerRowWise(ScalerReference):
    def transform(self, x):
        return (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)


class ScalerInPlace(ScalerReference):
    def transform(self, x):
        x -= self.mean_
        x /= self.std_
        return x


class ScalerNoZeroGuard(ScalerReference):
    def fit(self, x):
        self.mean_, self.std_ = x.mean(axis=0), x.std(axis=0)
        return self


class ScalerEpsilonGuard(ScalerReference):
    def fit(self, x):
        self.mean_, self.std_ = x.mean(axis=0), x.std(axis=0) + 1e-8
        return self


class ScalerFitReturnsNothing(ScalerReference):
    def fit(self, x):
        super().fit(x)


class ScalerSharedStatistics:
    """Statistics stored on the class: every instance sees the last fit."""

    def fit(self, x):
        std = x.std(axis=0)
        type(self).mean_, type(self).std_ = x.mean(axis=0), np.where(std > 0, std, 1.0)
        return self

    def transform(self, x):
        return (x - self.mean_) / self.std_


class ScalerFitsOnce(ScalerReference):
    def fit(self, x):
        if not hasattr(self, "mean_"):
            super().fit(x)
        return self


class ScalerMedian(ScalerReference):
    def fit(self, x):
        super().fit(x)
        self.mean_ = np.median(x, axis=0)
        return self


# ---------------------------------------------------------------- lab01.windows: right


class WindowsReference(torch.utils.data.Dataset):
    def __init__(self, ids, block_size):
        self.ids = torch.as_tensor(ids, dtype=torch.long)
        self.block_size = block_size

    def __len__(self):
        return len(self.ids) - self.block_size

    def __getitem__(self, i):
        chunk = self.ids[i:i + self.block_size + 1]
        return chunk[:-1], chunk[1:]


class WindowsUnfold(torch.utils.data.Dataset):
    """All windows made up front with unfold; items returned as a list."""

    def __init__(self, ids, block_size):
        windows = torch.as_tensor(ids).long().unfold(0, block_size + 1, 1)
        self.x, self.y = windows[:, :-1].clone(), windows[:, 1:].clone()

    def __len__(self):
        return self.x.shape[0]

    def __getitem__(self, i):
        return [self.x[i], self.y[i]]


class WindowsFromList:
    """Not a Dataset subclass, the ids kept as a Python list, tensors made per item."""

    def __init__(self, ids, block_size):
        self.ids, self.t = [int(v) for v in ids], block_size

    def __len__(self):
        return len(self.ids) - self.t

    def __getitem__(self, i):
        return torch.tensor(self.ids[i:i + self.t]), torch.tensor(self.ids[i + 1:i + 1 + self.t])


# ---------------------------------------------------------------- lab01.windows: wrong


class WindowsOneTooMany(WindowsReference):
    def __len__(self):
        return len(self.ids) - self.block_size + 1


class WindowsOneTooFew(WindowsReference):
    def __len__(self):
        return len(self.ids) - self.block_size - 1


class WindowsNotShifted(WindowsReference):
    def __getitem__(self, i):
        x = self.ids[i:i + self.block_size]
        return x, x


class WindowsShiftedTwice(WindowsReference):
    def __getitem__(self, i):
        return self.ids[i:i + self.block_size], self.ids[i + 2:i + self.block_size + 2]


class WindowsSingleTarget(WindowsReference):
    def __getitem__(self, i):
        return self.ids[i:i + self.block_size], self.ids[i + self.block_size]


class WindowsNumpy(WindowsReference):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x.numpy(), y.numpy()


class WindowsInt32(WindowsReference):
    def __init__(self, ids, block_size):
        super().__init__(ids, block_size)
        self.ids = self.ids.int()


class WindowsChunks(WindowsReference):
    """Non-overlapping chunks: one window per block, not per position."""

    def __len__(self):
        return (len(self.ids) - 1) // self.block_size

    def __getitem__(self, i):
        return super().__getitem__(i * self.block_size)


class WindowsRolled(WindowsReference):
    def __getitem__(self, i):
        x = self.ids[i:i + self.block_size]
        return x, torch.roll(x, -1)


class WindowsFixedBlock(WindowsReference):
    def __getitem__(self, i):
        chunk = self.ids[i:i + 6]
        return chunk[:-1], chunk[1:]


class WindowsShared(torch.utils.data.Dataset):
    """ids kept on the class: a second dataset replaces the first one's data."""

    ids = None
    block_size = 0

    def __init__(self, ids, block_size):
        WindowsShared.ids, WindowsShared.block_size = torch.as_tensor(ids), block_size

    def __len__(self):
        return len(WindowsShared.ids) - WindowsShared.block_size

    def __getitem__(self, i):
        return WindowsReference.__getitem__(self, i)


class WindowsStartLate(WindowsReference):
    def __getitem__(self, i):
        return super().__getitem__(i + 1)


class WindowsDestroysIds(WindowsReference):
    def __init__(self, ids, block_size):
        ids -= ids.min()  # token ids "normalised" to start at 0, in the caller's tensor
        super().__init__(ids, block_size)


CASES = {
    "lab01.scaler": Cases(
        correct=[ScalerReference, ScalerLoops, ScalerFloat32Torch, ScalerFloat32Numpy, ScalerFloat32Torch32],
        wrong=[
            Wrong(ScalerTestStatistics, "statistics from the test split"),
            Wrong(ScalerSampleStd, "ddof=1"),
            Wrong(ScalerFloat32TorchStd, "ddof=1"),
            Wrong(ScalerCachedTrainingOutput, "must not depend on which split"),
            Wrong(ScalerGlobalStatistics, "one mean and one std for the whole array"),
            Wrong(ScalerNotScaled, "centred but not scaled"),
            Wrong(ScalerRowWise, "statistics per row"),
            Wrong(ScalerInPlace, "transform changed the array it was given"),
            Wrong(ScalerNoZeroGuard, "non-finite values"),
            Wrong(ScalerEpsilonGuard, "tiny epsilon"),
            Wrong(ScalerFitReturnsNothing, "return self"),
            Wrong(ScalerSharedStatistics, "shared between instances"),
            Wrong(ScalerFitsOnce, "did not replace the statistics"),
            Wrong(ScalerMedian, "must have mean 0 in every feature"),  # named from the symptom (issue 19)
        ],
    ),
    "lab01.windows": Cases(
        correct=[WindowsReference, WindowsUnfold, WindowsFromList],
        wrong=[
            Wrong(WindowsOneTooMany, "one too many"),
            Wrong(WindowsOneTooFew, "one too few"),
            Wrong(WindowsNotShifted, "y equals x"),
            Wrong(WindowsShiftedTwice, "shifted by two tokens"),
            Wrong(WindowsSingleTarget, "single next token"),
            Wrong(WindowsNumpy, "must hold torch tensors"),
            Wrong(WindowsInt32, "must be int64"),
            Wrong(WindowsChunks, "non-overlapping chunks"),
            Wrong(WindowsRolled, "wraps around"),
            Wrong(WindowsFixedBlock, "use the block_size given to __init__"),
            Wrong(WindowsShared, "shared between instances"),
            Wrong(WindowsStartLate, "window i must start at ids[i]"),
            Wrong(WindowsDestroysIds, "changed the ids it was given"),
        ],
    ),
}


# ------------------------------------------------- wrong answers named from the symptom (issue 19)


class ScalerDividesByVariance(ScalerReference):
    def transform(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.std_**2


class ScalerMinMax:
    """Min-max scaling to [0, 1] (float32): a different transformation."""

    def fit(self, x):
        self.low_ = x.min(axis=0).astype(np.float32)
        span = x.max(axis=0) - x.min(axis=0)
        self.span_ = np.where(span > 0, span, 1.0).astype(np.float32)
        return self

    def transform(self, x):
        return (np.asarray(x, dtype=np.float32) - self.low_) / self.span_


class ScalerFirstRowsMean(ScalerReference):
    """The mean of the first 10 rows only."""

    def fit(self, x):
        super().fit(x)
        self.mean_ = np.asarray(x, dtype=np.float64)[:10].mean(axis=0)
        return self


class ScalerHalvedStd(ScalerReference):
    """Divides by twice the standard deviation (a hard-coded factor)."""

    def transform(self, x):
        return super().transform(x) / 2


CASES["lab01.scaler"].wrong.extend([
    Wrong(ScalerDividesByVariance, "must have standard deviation 1"),
    Wrong(ScalerMinMax, "must have mean 0 in every feature"),
    Wrong(ScalerFirstRowsMean, "must have mean 0 in every feature"),
    Wrong(ScalerHalvedStd, "must have standard deviation 1"),
])


class WindowsLenIsN(WindowsReference):
    def __len__(self):
        return len(self.ids)


class WindowsStrideBlock(WindowsReference):
    """Window i read from i * block_size: chunk indexing with the overlapping length."""

    def __getitem__(self, i):
        return super().__getitem__(i * self.block_size)


class WindowsReversedInput(WindowsReference):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        return x.flip(0), y


class WindowsTargetThreeAhead(WindowsReference):
    """The target read three tokens ahead (a hard-coded offset); the last windows clamp to the end."""

    def __getitem__(self, i):
        x, _ = super().__getitem__(i)
        start = min(i + 3, len(self.ids) - self.block_size)
        return x, self.ids[start:start + self.block_size]


CASES["lab01.windows"].wrong.extend([
    Wrong(WindowsLenIsN, "the number of ids"),
    Wrong(WindowsStrideBlock, "window i must start at ids[i]"),
    Wrong(WindowsReversedInput, "in reverse order"),
    Wrong(WindowsTargetThreeAhead, "shifted by exactly one token"),
])
