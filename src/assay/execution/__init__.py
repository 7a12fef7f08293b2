"""Running an experiment: callables prepared once, workers, retries and one writer."""
