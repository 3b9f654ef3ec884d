"""Publishing to the Hugging Face Hub, and the model cards of both families."""
