"""engramlab: memory and adaptive computation in neural networks.

Reference implementations with reproduced experiments. Start with ``engram list`` on the
command line, or in Python::

    import engramlab
    model, cfg = engramlab.load_run("runs/pondernet-parity/<timestamp>")
    parity, steps = model.predict(x)
"""

__version__ = "0.1.0"


def load_run(run_dir, arm=None):
    """Load a trained run: ``(model, config)``; the model is an ``nn.Module`` in eval mode.

    ``arm`` picks one of the run's models (for parity runs: 'pondernet', 'act' or 'fixed');
    by default the first arm of the experiment.
    """
    from engramlab.api import load_run as _load_run

    return _load_run(run_dir, arm)


__all__ = ["load_run", "__version__"]
