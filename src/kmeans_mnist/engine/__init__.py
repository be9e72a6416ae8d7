"""The engine: exact K-means on arrays, in memory (lloyd) or on Dask (dask/); it never touches files.

prepared.py holds X as the engine reads it and the exact distances; bounds.py the distance bounds
and the centre update; seeding.py the starts; lloyd.py the fit; estimator.py the scikit-learn face.
"""
