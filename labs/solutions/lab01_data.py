"""Reference solutions of lab 1 (``labs/lab01_data.ipynb``); see ``lab00_first_run.py``."""

import numpy as np
import torch


class FeatureScaler:
    def fit(self, x):
        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(axis=0)  # (d,)
        std = x.std(axis=0)  # (d,), ddof=0
        self.std_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, x):
        return (np.asarray(x, dtype=np.float64) - self.mean_) / self.std_  # (n, d)


class NextTokenWindows(torch.utils.data.Dataset):
    def __init__(self, ids, block_size):
        self.ids = torch.as_tensor(ids, dtype=torch.long)  # (N,)
        self.block_size = block_size

    def __len__(self):
        return len(self.ids) - self.block_size

    def __getitem__(self, i):
        chunk = self.ids[i:i + self.block_size + 1]  # (T + 1,)
        return chunk[:-1], chunk[1:]  # x (T,), y (T,)
