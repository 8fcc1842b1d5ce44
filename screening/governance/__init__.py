"""Clinical governance: site validation and its signed report, the adopted operating point, the model watched in use."""
