"""Dataset sources, one module each; every module here registers itself in
`steps.core.data.DATASET_SOURCES` and is found without being listed."""
