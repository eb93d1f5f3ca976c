package pebblestore

// SetNeighboursMaxChunks sets the bound of neighboursMaxChunks for a test
// and returns the function restoring it.
func SetNeighboursMaxChunks(n uint64) func() {
	old := neighboursMaxChunks
	neighboursMaxChunks = n
	return func() { neighboursMaxChunks = old }
}
