"""General-purpose in-context learners: task sampling, meta-training, evaluation, the results report."""
