"""The job-queue engine: the contract suite over every driver, the engine, Redis, real worker processes."""
