"""Coverage-guided fuzz targets (atheris) for the frame decoder and the request validators."""
