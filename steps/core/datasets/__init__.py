"""Dataset sources, one module each; every module here registers itself in
`steps.core.image_dataset.DATASET_SOURCES` and is found without being listed."""
