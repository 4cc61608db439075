"""The event pipeline: raw_events → sessions → training_pairs on Spark, and the same rules as DuckDB SQL.

``sessionize.build_sessions`` and ``pairs.build_training_pairs`` are what the Dagster assets call;
``pairs.read_training_pairs`` is how the model reads the result; ``reference`` is the yardstick.
"""
