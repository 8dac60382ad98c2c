"""Built-in degradations."""
