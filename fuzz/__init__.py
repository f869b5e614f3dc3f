"""Coverage-guided fuzzing of every decoder that reads network bytes (see run.py)."""
