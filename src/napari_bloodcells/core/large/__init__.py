"""Images too large for memory: lazy stores, block-by-block segmentation, and the dask
cluster that spreads files and blocks over workers.
"""
