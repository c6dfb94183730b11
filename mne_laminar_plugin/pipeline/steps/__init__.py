"""MBP step modules of this package (the folder must be named ``steps``)."""
