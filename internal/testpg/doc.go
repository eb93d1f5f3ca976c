// Package testpg gives tests a PostgreSQL server of their own: the first
// call to [New] in a test binary starts a private cluster (initdb and
// postgres from the PostgreSQL 15 installation scripts/test-deps.sh
// installs, in a temporary directory, on a free loopback port, run as the
// postgres system user when the tests run as root, since PostgreSQL
// refuses to run as root), and every call creates a fresh database, which
// the test's cleanup drops.
//
// A missing PostgreSQL installation fails the test; it never skips. The
// server is stopped when the test binary exits (it is the binary's child,
// killed with it), and the directories of servers whose binary is gone are
// removed by the next start.
package testpg
