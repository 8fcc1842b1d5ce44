"""Getting files in and keeping them: what may enter, storing it safely, submitting batches, removing them."""
