"""The operators a spec row can name: registry, layers and named rules."""
