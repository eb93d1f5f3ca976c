package pebblestore

import "github.com/jackc/pgx/v5"

// SetNeighboursMaxChunks sets the bound of neighboursMaxChunks for a test
// and returns the function restoring it.
func SetNeighboursMaxChunks(n uint64) func() {
	old := neighboursMaxChunks
	neighboursMaxChunks = n
	return func() { neighboursMaxChunks = old }
}

// SetPostgresTracer makes the stores OpenPostgres opens from now on trace
// their queries with tr (nil: none), for counting round trips.
func SetPostgresTracer(tr pgx.QueryTracer) { pgTracer = tr }
