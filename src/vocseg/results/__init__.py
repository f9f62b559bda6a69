"""Results: evaluation, inference, comparison, and the pictures and files they produce."""
