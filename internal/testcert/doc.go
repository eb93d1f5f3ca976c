// Package testcert makes TLS certificates for tests: a throwaway CA and a
// server certificate it signs, for localhost and 127.0.0.1.
package testcert
