// Command ingestcpu measures what ingesting NARs into a fresh default
// Pebble store costs and stores: it ingests each NAR given in turn with
// narrender.Ingest, packs what is still queued into hot frames after each
// one (as the dedup bench's Flush does), and prints the store's stored
// bytes and the process's CPU time (user + system, from getrusage) after
// each NAR, then the totals, the allocations and the wall time. CPU
// seconds do not depend on what else runs on the machine the way wall
// time does; stored bytes depend only on the options (and, a little, on
// the order concurrent workers queue chunks in).
//
//	go run ./scripts/internal/ingestcpu -data DIR [-frame-size N] [-level default] [-cpuprofile F] NAR...
//
// DIR is removed first.
package main
