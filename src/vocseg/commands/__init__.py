"""One module per `vocseg` verb: each turns flags into a call of library code and prints the result."""
