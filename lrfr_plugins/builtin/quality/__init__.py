"""Built-in quality estimators."""
