"""The data: named datasets through kagglehub, the USPS sheets shipped here, the user's own files.

Everything here ends in a `Dataset` (a flat uint8 `all_pixel` matrix and its labels); nothing here
knows K-means. `DatasetError` (errors.py) is the one error a user's data can cause.
"""
