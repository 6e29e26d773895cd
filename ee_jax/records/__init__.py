"""Experience records: their schemas, the one state renderer (prompts), the sharded store, and expert
trajectories read from files. Written by collection, read by data pipelines, evaluation and RL."""
