"""Reference models assembled from maskmm parts (importable as ``maskmm.models``)."""
