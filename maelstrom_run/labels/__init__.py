"""Labels: a taxonomy of scopes and categories, validation, search and recommendation."""
