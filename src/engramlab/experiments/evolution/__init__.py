"""Evolution: a learning rule evolved with CMA-ES (``evolved_rule``) and evolving run-and-tumble
bacteria (``bacteria``, figures in ``bacteria_plots``)."""
