"""Factor types: the pure algorithms behind each kind of second factor."""
