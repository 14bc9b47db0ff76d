"""One module per section group: each parses its [section] tables into the model."""
