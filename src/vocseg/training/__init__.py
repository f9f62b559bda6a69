"""Training: launching processes, the MMEngine components (loop, sampler, hooks), run folders and resuming."""
