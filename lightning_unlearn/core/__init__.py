"""Floor 0, the foundations: errors, atomic files and the cache folder, class names, argument
checks, rank-zero sharing and init-argument introspection. Imports nothing else of the package."""
