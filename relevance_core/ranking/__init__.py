"""The second stage: candidate sources, the features a ranker reads, the learned ranker and the business
rules. Framework-free, so the service and the offline evaluation run exactly the same code."""
