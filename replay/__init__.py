"""`posture replay`: the posture pipeline over a recorded CSV, as `posture run` would have run it live."""
