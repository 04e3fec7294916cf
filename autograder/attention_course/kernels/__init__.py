"""Reference kernels, one module per assignment. Graders and lessons use these as oracles."""
