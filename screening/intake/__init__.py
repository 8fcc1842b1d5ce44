"""Files in and kept: what may enter, storing it safely, submitting batches, display copies, removal."""
