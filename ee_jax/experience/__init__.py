"""Experience: record schemas, the state renderer, the shard store, and the collect stages."""
