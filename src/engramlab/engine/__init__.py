"""The engine: what an experiment is and how it runs, the same for every experiment.

- :mod:`.experiment`: the :class:`~.experiment.Experiment` base class and :class:`~.experiment.PaperNumber`;
- :mod:`.registry`: experiment names to their modules, imported on demand;
- :mod:`.runner`: train and evaluate every arm (in worker processes or under ``torchrun``), then
  summarise and plot;
- :mod:`.loop`: the one loop scaffold (resume, logging, checkpoints, progress) that runs a stepper;
  :mod:`.train` is its gradient stepper (the evolution and simulation steppers live with their code);
- :mod:`.checkpoint`, :mod:`.rundir`, :mod:`.progress`, :mod:`.distributed`, :mod:`.plots`: atomic
  checkpoints, the run directory, progress bars, DDP helpers and plot helpers.

The engine imports nothing from the toolbox (memory, ponder, models, tasks, evolve) or the
experiments: it knows them only through the ``Experiment`` interface.
"""
