"""KFP v2 components: one per pipeline stage, thin drivers of rfau.batch."""
