"""utils.env: seeding makes every generator repeat; the environment check has no false alarms."""

from __future__ import annotations

import random

import numpy as np
import torch

from utils import env, paths


def draw() -> tuple:
    return random.random(), np.random.rand(), torch.rand(1).item()


def test_seed_everything_repeats_python_numpy_and_torch():
    env.seed_everything(123)
    first = draw()
    env.seed_everything(123)
    assert draw() == first
    env.seed_everything(124)
    assert draw() != first


def test_seed_everything_seeds_tensorflow_once_imported():
    import tensorflow as tf
    env.seed_everything(7)
    a = tf.random.uniform((3,)).numpy()
    env.seed_everything(7)
    np.testing.assert_array_equal(tf.random.uniform((3,)).numpy(), a)


def test_version_comparison_accepts_newer_and_local_versions():
    assert env._release("2.13.0+cpu") == (2, 13, 0)
    assert env._release("2.21.0rc1") == (2, 21, 0)
    assert env._release("1.0.4.post1") == (1, 0, 4)
    assert env._release("2.10") > env._release("2.9.1")  # numbers, not strings
    newer = env.Requirement("numpy", "numpy", "0.1", "advice")
    assert env.check_requirement(newer).ok  # installed is far newer than the minimum: no false alarm


def test_check_reports_missing_and_too_old_with_advice(capsys):
    missing = env.Requirement("no_such_module_xyz", "no-such-dist-xyz", "1.0", "install it with pip")
    too_old = env.Requirement("numpy", "numpy", "999.0", "upgrade numpy")
    results = env.check_environment((missing, too_old))
    assert [r.ok for r in results] == [False, False]
    out = capsys.readouterr().out
    assert "FAIL no-such-dist-xyz" in out and "missing" in out and "-> install it with pip" in out
    assert "-> upgrade numpy" in out and "2 problem(s)" in out


def test_the_real_environment_passes():
    assert all(r.ok for r in env.check_environment(verbose=False))


def test_run_info_reports_cpu_and_memory():
    usage = env.resource_usage()
    assert usage["cpu_s"] > 0 and usage["peak_rss_mib"] > 10
    assert "CPU time" in env.run_info()


def test_paths_follow_the_repository_and_the_overrides(tmp_path, monkeypatch):
    root = paths.repo_root()
    assert root is not None and (root / "_toc.yml").is_file()
    monkeypatch.chdir(root / "book")
    monkeypatch.delenv("BOOK_RUNS_DIR", raising=False)
    assert paths.runs_dir() == root / "runs"  # a notebook in book/ writes to <repo>/runs, not book/runs
    monkeypatch.setenv("BOOK_RUNS_DIR", str(tmp_path))
    assert paths.runs_dir() == tmp_path.resolve()
    monkeypatch.chdir(tmp_path)
    assert paths.repo_root() is None
