"""Evaluation: the test loop over a split, the per-class metric, the result type (JSON/CSV) and its charts."""
