"""The model-serving process: loaded models, batching, and its internal HTTP interface."""
