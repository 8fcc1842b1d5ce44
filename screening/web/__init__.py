"""The pages people use: submitting and following batches, the worklist and review, exports, operator views."""
