"""Loss functions used by plugins (plain functions and modules, no registration)."""
