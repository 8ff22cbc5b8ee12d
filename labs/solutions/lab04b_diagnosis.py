"""Reference solutions of lab 4b (``labs/lab04b_diagnosis.ipynb``); see ``lab00_first_run.py``."""


def dead_fraction(activations):
    dead = (activations == 0).all(dim=0)  # (U,): silent on every example
    return dead.float().mean().item()


def diagnoses():
    return {"run_a": "overfitting", "run_b": "dead_relus", "run_c": "healthy",
            "run_d": "lr_too_low", "run_e": "lr_too_high"}
