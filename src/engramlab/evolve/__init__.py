"""Evolution: strategies over pycma and an antithetic ES (:mod:`.strategies`), the evolution loop
that writes the same run directory as gradient training (:mod:`.loop`)."""
