"""The recipes, importable as `medft.recipes` so that an installed medft can read them."""
