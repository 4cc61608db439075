"""Privacy operations: the right-to-erasure job and the retrain it can trigger."""
