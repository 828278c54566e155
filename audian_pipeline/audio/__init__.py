"""Audio checks the pipeline runs on downloaded recordings."""
