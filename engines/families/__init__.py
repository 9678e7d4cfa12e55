"""Model families: one folder per family (network, preparation, pre/post-processing, kind check)."""
