"""The model itself: variants, the torch module, complexity, the preprocessing contract, metrics, precisions."""
