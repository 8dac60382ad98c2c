"""The package version, alone in a module so that core modules and the build read it without importing the package."""

__version__ = "0.1.0"
