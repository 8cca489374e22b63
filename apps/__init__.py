"""Reference applications; each exposes ``train.main(ctx: RunContext) -> dict[str, float]``."""
