"""Saliency algorithms, one module each; every module here registers itself in
`steps.core.algorithm.ALGORITHMS` and is found without being listed."""
