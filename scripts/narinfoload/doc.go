// Command narinfoload measures how many narinfo requests per second one
// or more nixcas servers answer: C connections (-c), spread round-robin
// over the base URLs given as arguments, each GETting -path in a loop for
// -d, every answer checked for status 200 and a StorePath line. It prints
// the requests, the rate and the latency percentiles. It is a tool of
// scripts/bench-replicas.sh, not part of the server.
package main
