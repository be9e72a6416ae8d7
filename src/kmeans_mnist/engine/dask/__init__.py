"""The same engine on a Dask cluster: the rows stay on the workers, the centres travel."""
