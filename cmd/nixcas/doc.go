// Command nixcas is the one binary of nixcas: it ingests and renders NARs,
// reports on a store, and (as they land) serves, pushes and pulls.
//
// Every subcommand that opens a store takes --data DIR, defaulting to
// $XDG_DATA_HOME/nixcas (~/.local/share/nixcas). Errors go to stderr with a
// non-zero exit status; machine-readable results go to stdout as JSON.
package main
