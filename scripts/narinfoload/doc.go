// Command narinfoload measures how many narinfo requests per second one
// or more nixcas servers answer: C connections (-c), each GETting -path
// in a loop for -d from a base URL given as argument picked at random per
// request, every answer checked for status 200 and a StorePath line
// (bench.LoadGETs). It prints
// the requests, the rate and the latency percentiles. It is a tool of
// scripts/bench-replicas.sh, not part of the server.
package main
