"""One module per stage. Each exposes `run(ctx: refine_af.runner.StageContext)`; the graph is in pipeline.py."""
