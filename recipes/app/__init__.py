"""The application around the recipes: options, the training job, launching, the run directory, the ``flint`` command."""
