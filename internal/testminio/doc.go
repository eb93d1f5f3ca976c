// Package testminio runs a real MinIO server for tests: on a free
// loopback port, with a temporary data directory, fixed credentials and
// one bucket. The server can be stopped and started again on the same port
// with the same data, for tests of an object store that goes away.
//
// Tests start servers concurrently, with the same credentials and bucket
// name, so a server is ready only once the kernel shows its process as the
// one listener on its port (Linux: /proc): a test never talks to another
// test's server. A first start whose port was taken meanwhile tries
// another port; a restart whose port was taken fails the test.
//
// The binary is ${XDG_CACHE_HOME:-$HOME/.cache}/nixcas/bin/minio, which
// scripts/test-deps.sh builds (NIXCAS_MINIO names another); a test fails,
// never skips, when it is missing.
package testminio
